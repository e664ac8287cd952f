"""The report page, as Markdown and as a standalone HTML file, from one outline."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

__all__ = ["Page", "num", "pct", "write_atomic"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #555; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass
class Page:
    """An outline of headings, paragraphs, tables and figures."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        widths = {len(header)} | {len(r) for r in rows}
        if len(widths) != 1:
            raise ValueError(f"table rows of different lengths: {sorted(widths)}")
        self.blocks.append(("table", (header, rows)))

    def figure(self, path: str, caption: str) -> None:
        self.blocks.append(("figure", (path, caption)))

    # -- output ------------------------------------------------------------------
    def markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for kind, content in self.blocks:
            if kind == "heading":
                lines += [f"## {content}", ""]
            elif kind == "paragraph":
                lines += [str(content), ""]
            elif kind == "table":
                header, rows = cast(tuple[list[str], list[list[str]]], content)
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "|".join("---" for _ in header) + "|")
                lines += ["| " + " | ".join(row) + " |" for row in rows]
                lines.append("")
            else:
                path, caption = cast(tuple[str, str], content)
                lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def html(self) -> str:
        esc = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(self.title)}</title><style>{_STYLE}</style></head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for kind, content in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{esc(str(content))}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{_inline_code(esc(str(content)))}</p>")
            elif kind == "table":
                header, rows = cast(tuple[list[str], list[list[str]]], content)
                head = "".join(f"<th>{esc(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
                    for row in rows
                )
                parts.append(
                    f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                )
            else:
                path, caption = cast(tuple[str, str], content)
                parts.append(
                    f'<figure><img src="{esc(path)}" alt="{esc(caption)}">'
                    f"<figcaption>{esc(caption)}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html``; returns their paths."""
        md, page = directory / "report.md", directory / "report.html"
        write_atomic(md, self.markdown())
        write_atomic(page, self.html())
        return md, page


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file: a reader (or a crash)
    never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _inline_code(text: str) -> str:
    """`code` spans of the Markdown source as <code> in HTML."""
    pieces = text.split("`")
    return "".join(
        f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(pieces)
    )


def pct(value: float | None) -> str:
    """A share as a percentage with two decimals; "-" for None or NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{100 * value:.2f}"


def num(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "-" for None or NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"
