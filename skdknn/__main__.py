"""Command line: ``skdknn report | train | attack | explain``.

Also ``python -m skdknn``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._report import ATTACKS, DATASETS, ReportConfig, attack, explain, run_report, train
from ._version import __version__

__all__ = ["main"]


def _number(kind: type, low: float, inclusive: bool = True) -> Callable[[str], Any]:
    """argparse type: a number of ``kind`` at least (or above) ``low``."""
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if value < low or (not inclusive and value == low):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"expected {name} {bound}, got {value}")
        return value

    return parse


_positive_int = _number(int, 1)
_positive_float = _number(float, 0.0, inclusive=False)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        help="embedded: the 5,000-image real-MNIST sample that ships with skdknn "
        "(default); mnist / fashion-mnist: the IDX files in --data-dir",
    )
    data.add_argument(
        "--data-dir", help="directory with the MNIST or Fashion-MNIST IDX files"
    )
    data.add_argument("--train-size", type=_positive_int, help="training images")
    data.add_argument("--test-size", type=_positive_int, help="held-out images")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--epochs", type=_positive_int, help="CNN training epochs")
    model.add_argument("--n-neighbors", type=_positive_int, help="k of the DkNN")
    model.add_argument("--metric", choices=["euclidean", "cosine"])
    model.add_argument(
        "--calibration-size", type=_positive_int, help="calibration images"
    )
    model.add_argument("--random-state", type=int)
    model.add_argument(
        "--quick",
        action="store_true",
        help="small settings for a run of a minute or two",
    )
    model.add_argument(
        "--no-reuse",
        action="store_true",
        help="recompute models and adversarial sets even when saved ones match",
    )
    model.add_argument("-v", "--verbose", action="count", default=1)
    model.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skdknn",
        description="Deep k-Nearest Neighbours with credibility, and adversarial "
        "attacks on them, for scikit-learn.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    report = commands.add_parser(
        "report",
        help="train the DkNN paper CNN, fit the DkNN, run FGSM / BIM / AdvKNN and "
        "write an HTML + Markdown report with tables, figures and a JSON of numbers",
    )
    report.add_argument("--out", default="skdknn_report", help="output directory")
    _add_data_options(report)
    _add_model_options(report)
    attacks = report.add_argument_group("attacks")
    attacks.add_argument("--eps", type=_positive_float, help="L-inf budget")
    attacks.add_argument("--step", type=_positive_float, help="BIM step size")
    attacks.add_argument("--n-iter", type=_positive_int, help="BIM iterations")
    attacks.add_argument(
        "--eps-grid",
        help="comma-separated eps values of the accuracy-vs-eps curves",
    )

    train_cmd = commands.add_parser(
        "train", help="train the CNN, fit the DkNN and save them in --out"
    )
    train_cmd.add_argument("--out", default="skdknn_model", help="output directory")
    _add_data_options(train_cmd)
    _add_model_options(train_cmd)

    attack_cmd = commands.add_parser(
        "attack",
        help="attack the test images of a model saved by `train` or `report` and "
        "save the adversarial set (.npz)",
    )
    attack_cmd.add_argument("--model", required=True, help="directory of the model")
    attack_cmd.add_argument("--method", choices=ATTACKS, default="fgsm")
    attack_cmd.add_argument("--out", default="adversarial.npz", help="output file")
    attack_cmd.add_argument("--eps", type=_positive_float, default=0.25)
    attack_cmd.add_argument("--step", type=_positive_float, default=0.01)
    attack_cmd.add_argument("--n-iter", type=_positive_int, default=100)
    attack_cmd.add_argument("--layer", default="relu3", help="AdvKNN: attacked layer")
    attack_cmd.add_argument("--lam", type=_positive_float, default=0.3)
    attack_cmd.add_argument("--head-epochs", type=_positive_int, default=30)
    attack_cmd.add_argument(
        "--no-consistency",
        action="store_true",
        help="AdvKNN: train the head with cross-entropy only",
    )
    attack_cmd.add_argument("--n-samples", type=_positive_int, help="test images")
    attack_cmd.add_argument("-v", "--verbose", action="count", default=1)

    explain_cmd = commands.add_parser(
        "explain",
        help="draw a test image and its nearest training images at every layer",
    )
    explain_cmd.add_argument("--model", required=True, help="directory of the model")
    explain_cmd.add_argument("--index", type=int, default=0, help="test image index")
    explain_cmd.add_argument(
        "--adversarial", help="take the image from this adversarial set (.npz)"
    )
    explain_cmd.add_argument("--n-neighbors", type=_positive_int, default=5)
    explain_cmd.add_argument("--out", default="explanation.png", help="PNG file")
    return parser


def _config(args: argparse.Namespace) -> ReportConfig:
    overrides: dict[str, Any] = {
        "out": args.out,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "max_epochs": args.epochs,
        "n_neighbors": args.n_neighbors,
        "metric": args.metric,
        "calibration_size": args.calibration_size,
        "random_state": args.random_state,
        "reuse": False if args.no_reuse else None,
        "verbose": 0 if args.quiet else args.verbose,
    }
    if args.data_dir is not None and args.dataset is None:
        overrides["dataset"] = "mnist"
    for name in ("eps", "step", "n_iter"):
        overrides[name] = getattr(args, name, None)
    grid = getattr(args, "eps_grid", None)
    if grid is not None:
        try:
            overrides["eps_grid"] = sorted(float(e) for e in grid.split(","))
        except ValueError:
            raise ValueError(
                f"--eps-grid expects comma-separated numbers, got {grid!r}"
            ) from None
        if overrides["eps_grid"][0] <= 0:
            raise ValueError(f"--eps-grid values must be positive, got {grid!r}")
    config = ReportConfig.from_overrides(args.quick, **overrides)
    if config.step > config.eps:
        raise ValueError(
            f"--step {config.step:g} is larger than --eps {config.eps:g}; BIM's "
            "step must be at most eps."
        )
    if config.calibration_size < 10:
        raise ValueError("--calibration-size must leave at least one image per class.")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skdknn`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            run_report(_config(args))
        elif args.command == "train":
            train(_config(args))
        elif args.command == "attack":
            attack(
                args.model,
                args.method,
                args.out,
                eps=args.eps,
                step=args.step,
                n_iter=args.n_iter,
                layer=args.layer,
                lam=args.lam,
                head_epochs=args.head_epochs,
                consistency=not args.no_consistency,
                n_samples=args.n_samples,
                verbose=args.verbose - 1,
            )
        else:
            explain(
                args.model,
                args.index,
                args.out,
                adversarial=args.adversarial,
                n_neighbors=args.n_neighbors,
            )
    except (OSError, ValueError) as error:
        print(f"skdknn {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
