"""Mutation testing of skdknn's core modules with mutmut, one module at a time.

    python tools/mutation.py                      # every core module
    python tools/mutation.py conformal attacks    # some of them
    python tools/mutation.py --report             # scores of the last run only

mutmut (configured in pyproject.toml, ``[tool.mutmut]``) copies the package to
``mutants/``, runs the selected test files once to learn which tests reach which
function, then runs every mutant of a module against only those tests. A mutant
*survives* when all of them pass. The score of a module is

    killed / (mutants - equivalent)

where a timeout counts as killed and "no tests" as survived. Equivalent mutants
(the mutated code behaves exactly like the original) are listed in ``EQUIVALENT``
below with the reason; they are recognised by the text of the mutated line, so they
survive renumbering when a function changes. Not run in CI (it takes minutes per
module): see docs/development.md.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The classifier's conformal wiring: the methods from neighbour counts to p-values.
WIRING = [
    "fit",
    "_counts",
    "neighbor_counts",
    "predict",
    "predict_proba",
    "p_values",
    "credibility",
    "confidence",
    "predict_set",
]

# mutmut's separator in the names of a method's mutants (class name, method name)
_SEP = "\u01c1"

#: module -> (mutmut source file, globs of its mutant names)
MODULES: dict[str, tuple[str, list[str]]] = {
    "conformal": ("skdknn/conformal.py", ["skdknn.conformal.*"]),
    "calibration": ("skdknn/_calibration.py", ["skdknn._calibration.*"]),
    "classifier": (
        "skdknn/_classifier.py",
        [f"skdknn._classifier.x{_SEP}DeepKNNClassifier{_SEP}{m}__*" for m in WIRING],
    ),
    "attacks": (
        "skdknn/attacks",
        [
            "skdknn.attacks._base.*",
            "skdknn.attacks._bim.*",
            "skdknn.attacks._fgsm.*",
        ],
    ),
    "exact": ("skdknn/neighbors/_exact.py", ["skdknn.neighbors._exact.*"]),
}

# (glob of the mutated function, text of the mutated line, why it changes nothing)
EQUIVALENT: list[tuple[str, str, str]] = [
    (
        "skdknn.conformal.x_neighbor_label_counts__*",
        "np.arange(n * n_layers, ",
        "np.arange of a Python int already gives int64 (the default integer)",
    ),
    (
        "skdknn.conformal.x_p_values__*",
        "np.searchsorted(scores, alpha_arr, )",
        'side="left" is searchsorted\'s default',
    ),
    (
        "skdknn.conformal.x_neighbor_proba__*",
        ".astype(None)",
        "astype(None) is astype(float64)",
    ),
    (
        "skdknn.conformal.x_confidence__*",
        "np.partition(p_arr, -2, )",
        "the default axis -1 is axis 1 of the 2-D p-values",
    ),
]


def mutmut(*args: str, log: Path) -> int:
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci")
    with log.open("a") as out:
        return subprocess.call(
            [sys.executable, "-m", "mutmut", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def results() -> dict[str, int | None]:
    codes: dict[str, int | None] = {}
    for meta in (ROOT / "mutants").rglob("*.py.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def mutated_line(name: str, log: Path) -> str:
    """The ``+`` lines of ``mutmut show name`` (what the mutant changed)."""
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return "\n".join(
        line[1:] for line in shown.splitlines() if re.match(r"\+(?!\+\+)", line)
    )


def equivalent_reason(name: str, diff: str) -> str | None:
    for pattern, text, reason in EQUIVALENT:
        if fnmatch.fnmatch(name, pattern) and text in diff:
            return reason
    return None


def score(module: str, log: Path) -> tuple[int, int, list[str], list[str]]:
    """(killed, non-equivalent mutants, survivors, equivalents) of ``module``."""
    _, globs = MODULES[module]
    codes = {
        name: code
        for name, code in results().items()
        if any(fnmatch.fnmatch(name, g) for g in globs)
    }
    killed_codes = {1, 3, 36, -24, 24, 152, 255}
    killed, survivors, equivalents = 0, [], []
    for name, code in sorted(codes.items()):
        if code in killed_codes:
            killed += 1
            continue
        diff = mutated_line(name, log)
        reason = equivalent_reason(name, diff)
        if reason is not None:
            equivalents.append(f"{name}: {diff.strip()}  [{reason}]")
        else:
            survivors.append(f"{name} ({code}): {diff.strip()}")
    return killed, len(codes) - len(equivalents), survivors, equivalents


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(MODULES)}")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument(
        "--report", action="store_true", help="only print the last run's scores"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse mutants/ (by default it is rebuilt so no stale copy is tested)",
    )
    args = parser.parse_args()
    modules = args.modules or list(MODULES)
    unknown = sorted(set(modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {list(MODULES)}")
    log = ROOT / "mutants" / "run.log"
    if not args.report:
        if not args.keep:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        log.parent.mkdir(exist_ok=True)
        log.write_text("")
        for module in modules:
            start = time.perf_counter()
            mutmut(
                "run",
                "--max-children",
                str(args.max_children),
                *MODULES[module][1],
                log=log,
            )
            print(f"{module}: ran in {time.perf_counter() - start:.0f} s", flush=True)
    worst = 1.0
    for module in modules:
        killed, total, survivors, equivalents = score(module, log)
        rate = killed / total if total else 1.0
        worst = min(worst, rate)
        print(
            f"{module:12s} {killed:4d} / {total:4d} killed = {100 * rate:5.1f} %"
            f"  ({len(equivalents)} equivalent)"
        )
        for line in survivors:
            print(f"    survived  {line}")
        for line in equivalents:
            print(f"    equivalent {line}")
    return 0 if worst >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
