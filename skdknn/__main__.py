"""Command line: ``skdknn report`` (also ``python -m skdknn report``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._report import ReportConfig, run_report
from ._version import __version__

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skdknn",
        description="Deep k-Nearest Neighbours with credibility, for scikit-learn.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="train the DkNN paper CNN on MNIST, fit the DkNN and report accuracy "
        "and credibility on held-out images",
    )
    report.add_argument(
        "--data-dir",
        help="directory with the MNIST IDX files (default: the embedded 5,000-image "
        "real-MNIST sample)",
    )
    report.add_argument("--out", default="skdknn_report", help="output directory")
    report.add_argument("--epochs", type=_positive_int, help="CNN training epochs")
    report.add_argument("--n-neighbors", type=_positive_int, help="k of the DkNN")
    report.add_argument("--test-size", type=_positive_int, help="held-out images")
    report.add_argument("--random-state", type=int, default=0)
    report.add_argument(
        "--quick", action="store_true", help="a run of seconds, for a smoke test"
    )
    report.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skdknn`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    overrides = {
        "data_dir": args.data_dir,
        "out": args.out,
        "random_state": args.random_state,
        "verbose": args.verbose,
    }
    for option, name in [
        ("epochs", "max_epochs"),
        ("test_size", "test_size"),
    ]:
        if getattr(args, option) is not None:
            overrides[name] = getattr(args, option)
    if args.n_neighbors is not None:
        overrides["variants"] = [
            (args.n_neighbors, "euclidean"),
            (args.n_neighbors, "cosine"),
        ]
    config = (
        ReportConfig.quick(**overrides) if args.quick else ReportConfig(**overrides)
    )
    try:
        run_report(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"skdknn: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
