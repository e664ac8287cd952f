"""Check every code block of README.md and docs/*.md against scripts that run.

``python docs/_examples/check_docs.py`` checks, without running anything, that
every fenced block of README.md and of every page in docs/ is accounted for:

- a ```python block is a contiguous run of lines of one script in
  docs/_examples/ (the script may hold more lines, e.g. asserts on what the
  page states, around the runs the pages show);
- a ```text block placed right after a python block (or after "Output:") is
  that script's output (checked with ``--run``); any other text block is an
  illustration (a diagram, a file layout) and is not code;
- a block in any other language (```bash, ...) is preceded by a marker
  comment saying how it is checked: ``<!-- docs-check: in .ci/run -->`` (every
  command of the block is a line of .ci/run, which CI runs),
  ``<!-- docs-check: cli -->`` (every ``skdknn ...`` command of the block is
  accepted by the command line's argument parser; tests/test_cli.py runs each
  subcommand with small settings) or ``<!-- docs-check: not run: <reason> -->``
  (e.g. it downloads the full datasets or runs for hours). A python block may
  carry the "not run" marker too; it must then still compile.

``python docs/_examples/check_docs.py --run`` also runs every script that a
page shows (each once) and checks each output block against a fresh run
(timings such as ``2.7 s`` are not compared). Decimal numbers are compared
within ``DECIMAL_TOLERANCE`` (absolute, or relative to the value shown): the pages
show the outputs of one machine, and a network trained on another CPU, whose
float32 kernels round otherwise, moves a few test images across a boundary
(seen: an accuracy over 200 images printed as 0.745 on an AVX-512 CPU and 0.735
on an AVX2 one, a mean credibility 0.515 against 0.516). Everything else, integers
and shapes included, must be equal. The scripts in ``SLOW`` (minutes each) are
only run with ``--all`` too; CI runs ``--run --all``
(tests/test_docs.py::test_doc_outputs_match_a_fresh_run).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CI_SCRIPT = ROOT / ".ci" / "run"
SLOW = {"choosing_k.py", "attacks.py"}
FENCE = re.compile(r"^```(\w*)\n(.*?)\n```$", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-check:\s*(.*?)\s*-->\s*$", re.S)
TIMING = re.compile(r"\d+(\.\d+)? s\b")
DECIMAL = re.compile(r"-?\d+\.\d+")
#: (absolute, relative) tolerance of a decimal number of an output block: 3 of
#: 200 images, or 2 % of the value shown
DECIMAL_TOLERANCE = (0.015, 0.02)


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    code: str
    adjacent: bool  # right after the previous block (or after "Output:")
    marker: str | None  # what the <!-- docs-check: ... --> comment before it says

    def where(self) -> str:
        page = (
            self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        )
        return f"{page}:{self.line}"


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def same_output_line(fresh: str, shown: str) -> bool:
    """Whether a line of a fresh run prints what a page shows: the same text and
    integers, decimal numbers within ``DECIMAL_TOLERANCE``."""
    if DECIMAL.split(fresh) != DECIMAL.split(shown):
        return False
    absolute, relative = DECIMAL_TOLERANCE
    for a, b in zip(DECIMAL.findall(fresh), DECIMAL.findall(shown), strict=True):
        if abs(float(a) - float(b)) > max(absolute, relative * abs(float(b))):
            return False
    return True


def contains(haystack: list[str], needle: list[str], mask: bool = False) -> bool:
    """Whether ``needle``'s lines appear in a row in ``haystack``; with ``mask``,
    as an output block: timings masked, decimals compared within tolerance."""
    same = same_output_line if mask else str.__eq__
    if mask:
        haystack = [TIMING.sub("<t>", h) for h in haystack]
        needle = [TIMING.sub("<t>", n) for n in needle]
    n = len(needle)
    return any(
        all(same(h, s) for h, s in zip(haystack[i : i + n], needle, strict=True))
        for i in range(len(haystack) - n + 1)
    )


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    text = page.read_text()
    found, end = [], None
    for match in FENCE.finditer(text):
        before = text[end if end is not None else 0 : match.start()]
        adjacent = end is not None and before.strip() in ("", "Output:")
        marker = MARKER.search(before.rstrip())
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                lang=match.group(1),
                code=match.group(2),
                adjacent=adjacent,
                marker=marker.group(1) if marker else None,
            )
        )
        end = match.end()
    return found


def commands(code: str) -> list[str]:
    """The commands of a shell block: its lines without comments and prompts."""
    found = []
    for line in code.splitlines():
        command = line.split(" #")[0].strip().removeprefix("$ ")
        if command and not command.startswith("#"):
            found.append(command)
    return found


def check_marked(block: Block, ci_lines: list[str]) -> str | None:
    """Why a block with a docs-check marker fails its check (None: it passes)."""
    marker = block.marker or ""
    if marker.startswith("not run:") and marker.removeprefix("not run:").strip():
        if block.lang == "python":
            try:
                compile(block.code, block.where(), "exec")
            except SyntaxError as exc:
                return f"does not compile: {exc}"
        return None
    if marker == "cli":
        return check_cli(commands(block.code))
    if marker == "in .ci/run":
        missing = [c for c in commands(block.code) if c not in ci_lines]
        return f"commands not in .ci/run: {missing}" if missing else None
    return f"unknown marker {marker!r}; expected 'in .ci/run' or 'not run: <reason>'"


def check_cli(shown: list[str]) -> str | None:
    """Why the ``skdknn`` commands of a block are not valid (None: they are)."""
    from skdknn.__main__ import build_parser

    if not shown:
        return "holds no command"
    for command in shown:
        words = shlex.split(command)
        if words[:1] != ["skdknn"] or "&&" in words or "|" in words:
            return f"{command!r} is not a single skdknn command"
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
                build_parser().parse_args(words[1:])
        except SystemExit as exc:
            if exc.code:  # --help exits with 0
                return f"{command!r} is rejected: {err.getvalue().strip()}"
    return None


def run_script(name: str) -> list[str]:
    print(f"running {name} ...", end=" ", flush=True)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(HERE / name)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    print(f"{time.perf_counter() - start:.0f} s")
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{result.stdout}\n{result.stderr}")
    return lines(result.stdout)


def check(pages: list[Path], run: bool, run_slow: bool) -> int:
    """Check the blocks of ``pages``; print what fails; return the exit status."""
    scripts = {
        path.name: lines(path.read_text())
        for path in sorted(HERE.glob("*.py"))
        if path.name != Path(__file__).name
    }
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text().splitlines()]
    outputs: dict[str, list[str]] = {}
    failures = 0

    def fail(block: Block, why: str) -> None:
        nonlocal failures
        failures += 1
        print(f"{block.where()}: {block.lang or 'unlabelled'} block {why}")

    for page in pages:
        script = None
        for block in blocks(page):
            if block.marker is not None:
                script = None
                if (why := check_marked(block, ci_lines)) is not None:
                    fail(block, why)
            elif block.lang == "python":
                names = [
                    n for n, src in scripts.items() if contains(src, lines(block.code))
                ]
                script = names[0] if names else None
                if script is None:
                    fail(
                        block, f"is in no script of docs/_examples:\n{block.code[:300]}"
                    )
                elif run and (run_slow or script not in SLOW) and script not in outputs:
                    outputs[script] = run_script(script)
            elif block.lang == "text":
                if not (block.adjacent and script is not None):
                    continue  # an illustration, not an output
                if script in outputs and not contains(
                    outputs[script], lines(block.code), mask=True
                ):
                    fresh = "\n".join(outputs[script])
                    fail(
                        block,
                        f"differs from the output of {script}:\n{block.code}\n"
                        f"a fresh run printed:\n{fresh}",
                    )
            else:
                script = None
                fail(
                    block,
                    "is neither run nor marked: add <!-- docs-check: in .ci/run --> "
                    "or <!-- docs-check: not run: <reason> --> before it",
                )
    print("OK" if failures == 0 else f"{failures} failure(s)")
    return 1 if failures else 0


def main() -> int:
    return check(PAGES, run="--run" in sys.argv, run_slow="--all" in sys.argv)


if __name__ == "__main__":
    sys.exit(main())
