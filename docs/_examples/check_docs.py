"""Check that the code and outputs on the documentation pages match these scripts.

``python docs/_examples/check_docs.py`` checks that every ```python block of
the pages in ``PAGES`` is a contiguous run of lines of one script in
docs/_examples/.

``python docs/_examples/check_docs.py --run`` also runs those scripts and checks
that each ```text block placed right after a python block (or after "Output:")
is a contiguous run of lines of that script's output (timings such as ``2.7 s``
are not compared).
``choosing_k.py`` and ``attacks.py`` are not run (they take minutes) unless
``--all`` is given.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAGES = [
    HERE.parent / name
    for name in (
        "index.md",
        "getting-started.md",
        "dknn.md",
        "choosing-layers-and-k.md",
        "backends.md",
        "large-networks.md",
        "attacks.md",
        "persistence.md",
        "scaling-out.md",
        "reproduction.md",
    )
]
SLOW = {"choosing_k.py", "attacks.py"}
FENCE = re.compile(r"```(\w+)\n(.*?)\n```", re.S)
TIMING = re.compile(r"\d+(\.\d+)? s\b")


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def contains(haystack: list[str], needle: list[str], mask: bool = False) -> bool:
    if mask:
        haystack = [TIMING.sub("<t>", h) for h in haystack]
        needle = [TIMING.sub("<t>", n) for n in needle]
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def blocks(page: Path) -> list[tuple[str, str, bool]]:
    """(language, code, directly after the previous block) for each fenced block."""
    text = page.read_text()
    found, end = [], None
    for match in FENCE.finditer(text):
        adjacent = end is not None and text[end : match.start()].strip() in (
            "",
            "Output:",
        )
        found.append((match.group(1), match.group(2), adjacent))
        end = match.end()
    return found


def main() -> int:
    run = "--run" in sys.argv
    scripts = {
        path.name: lines(path.read_text())
        for path in sorted(HERE.glob("*.py"))
        if path.name != Path(__file__).name
    }
    outputs: dict[str, list[str]] = {}
    failures = 0
    for page in PAGES:
        script = None
        for lang, code, adjacent in blocks(page):
            if lang == "python":
                matches = [
                    name for name, src in scripts.items() if contains(src, lines(code))
                ]
                if not matches:
                    print(f"{page.name}: python block not in any script:\n{code[:200]}")
                    failures += 1
                    script = None
                    continue
                script = matches[0]
            elif lang == "text" and adjacent and script is not None and run:
                if script in SLOW and "--all" not in sys.argv:
                    continue
                if script not in outputs:
                    print(f"running {script} ...", end=" ", flush=True)
                    start = time.perf_counter()
                    result = subprocess.run(
                        [sys.executable, str(HERE / script)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    outputs[script] = lines(result.stdout)
                    print(f"{time.perf_counter() - start:.0f} s")
                if not contains(outputs[script], lines(code), mask=True):
                    print(f"{page.name}: output of {script} differs from:\n{code}")
                    failures += 1
            elif lang != "text":
                script = None
    print("OK" if failures == 0 else f"{failures} mismatch(es)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
