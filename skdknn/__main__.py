"""Command line: ``skdknn report | train | attack | explain``.

Also ``python -m skdknn``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._report import (
    ATTACKS,
    DATASETS,
    NETS,
    SECTIONS,
    ReportConfig,
    attack,
    explain,
    parse_sections,
    run_report,
    train,
)
from ._version import __version__
from .neighbors import make_backend

__all__ = ["main"]


def _number(kind: type, low: float, inclusive: bool = True) -> Callable[[str], Any]:
    """argparse type: a number of ``kind`` at least (or above) ``low``."""
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"expected a finite {name[2:]}, got {text!r}"
            )
        if value < low or (not inclusive and value == low):
            bound = f">= {low}" if inclusive else f"> {low}"
            raise argparse.ArgumentTypeError(f"expected {name} {bound}, got {value}")
        return value

    return parse


_positive_int = _number(int, 1)
_positive_float = _number(float, 0.0, inclusive=False)


def _seed(text: str) -> int:
    """argparse type: a random seed, an integer in [0, 2**32 - 1] (numpy's range)."""
    value = _number(int, 0)(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(
            f"expected an integer <= 2**32 - 1, got {value}"
        )
    return int(value)


def _grid(kind: type) -> Callable[[str], list[Any]]:
    """argparse type: sorted positive finite values, comma-separated."""
    name = "integers" if kind is int else "numbers"

    def parse(text: str) -> list[Any]:
        try:
            values = sorted(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {name}, got {text!r}"
            ) from None
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise argparse.ArgumentTypeError(
                f"expected comma-separated positive finite {name}, got {text!r}"
            )
        return values

    return parse


def _output_file(text: str) -> str:
    """argparse type: a file path whose directory exists (checked before any work)."""
    directory = Path(text).parent
    if not directory.is_dir():
        raise argparse.ArgumentTypeError(
            f"cannot write {text!r}: the directory {os.fspath(directory)!r} does not "
            "exist"
        )
    return text


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` after every option that has a default value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if (
            action.default is None
            or action.default is False
            or isinstance(action, argparse._CountAction | argparse._VersionAction)
            or action.default == argparse.SUPPRESS
        ):
            return action.help
        return super()._get_help_string(action)


_DEFAULTS, _QUICK = ReportConfig(), ReportConfig.quick()


def _default(name: str, text: Callable[[Any], str] = str) -> str:
    """ "(default: X; --quick: Y)" of a setting of ``skdknn report`` / ``train``."""
    value, quick = getattr(_DEFAULTS, name), getattr(_QUICK, name)
    if value == quick:
        return f"(default: {text(value)})"
    return f"(default: {text(value)}; with --quick: {text(quick)})"


def _backend(text: str) -> str:
    """argparse type: a backend name or recipe that make_backend accepts."""
    try:
        make_backend(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=1,
        help="more progress output (repeat for more)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars or step messages; only results and errors",
    )


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASETS,
        help="embedded: the 5,000-image real-MNIST sample that ships with skdknn; "
        "mnist / fashion-mnist: the IDX files in --data-dir "
        "(default: embedded, or mnist when --data-dir is given)",
    )
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory with the MNIST or Fashion-MNIST IDX files (default: none; "
        "the embedded sample needs none)",
    )
    data.add_argument(
        "--train-size",
        type=_positive_int,
        metavar="N",
        help="training images, indexed + calibration "
        + _default("train_size", lambda v: "all" if v is None else f"{v}"),
    )
    data.add_argument(
        "--test-size",
        type=_positive_int,
        metavar="N",
        help="held-out test images " + _default("test_size"),
    )


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument(
        "--net",
        choices=list(NETS),
        help="the network: paper-cnn (the DkNN paper's CNN, DkNN on its three "
        "ReLUs and logits), bn-cnn (the thesis's deeper BatchNorm CNN, DkNN on its "
        "BatchNorm outputs), lenet5 " + _default("net"),
    )
    model.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help="CNN training epochs " + _default("max_epochs"),
    )
    model.add_argument(
        "--n-neighbors",
        type=_positive_int,
        metavar="K",
        help="k of the DkNN " + _default("n_neighbors"),
    )
    model.add_argument(
        "--metric",
        choices=["euclidean", "cosine"],
        help="distance between activations " + _default("metric"),
    )
    model.add_argument(
        "--backend",
        type=_backend,
        metavar="RECIPE",
        help="neighbour search: exact, faiss, faiss-ivf, annoy, pynndescent, lsh, "
        "or a projection in front of one, e.g. pca128+faiss-ivf (fast on full "
        "MNIST) or random256+exact; see skdknn.neighbors.make_backend "
        + _default("backend"),
    )
    model.add_argument(
        "--calibration-size",
        type=_positive_int,
        metavar="N",
        help="calibration images, held out of the index "
        + _default("calibration_size"),
    )
    model.add_argument(
        "--random-state",
        type=_seed,
        metavar="SEED",
        help="seed of the data split, the CNN and the attacks "
        + _default("random_state"),
    )
    model.add_argument(
        "--quick",
        action="store_true",
        help="small settings (the --quick values above): about half a minute on 2 "
        "idle cores, about 10x faster than the papers' settings",
    )
    model.add_argument(
        "--no-reuse",
        action="store_true",
        help="recompute models and adversarial sets even when saved ones match",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skdknn",
        description="Deep k-Nearest Neighbours with credibility, and adversarial "
        "attacks on them, for scikit-learn.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=text, description=text, formatter_class=_HelpFormatter
        )

    report = command(
        "report",
        "train the DkNN paper CNN, fit the DkNN, run FGSM / BIM / AdvKNN and "
        "write an HTML + Markdown report with tables, figures and a JSON of numbers",
    )
    report.add_argument(
        "--out", default="skdknn_report", metavar="DIR", help="output directory"
    )
    _add_data_options(report)
    report.add_argument(
        "--ood-dir",
        metavar="DIR",
        help="directory with an IDX images file (t10k-images-idx3-ubyte, else "
        "train-images-idx3-ubyte, each plain or .gz) of the training images' "
        "shape, e.g. Fashion-MNIST's for an MNIST report: the ood section's "
        "inputs of no class (default: uniform noise, pixel-shuffled test images "
        "and patches of photographs)",
    )
    _add_model_options(report)
    attacks = report.add_argument_group("attacks")
    attacks.add_argument(
        "--eps",
        type=_positive_float,
        help="L-infinity budget of the attack table " + _default("eps"),
    )
    attacks.add_argument(
        "--step", type=_positive_float, help="BIM step size " + _default("step")
    )
    attacks.add_argument(
        "--n-iter",
        type=_positive_int,
        metavar="N",
        help="BIM iterations " + _default("n_iter"),
    )
    report.add_argument(
        "--k-grid",
        type=_grid(int),
        metavar="K1,K2,...",
        help="comma-separated k of the attack-success-against-k section "
        + _default("k_grid", lambda v: ",".join(str(k) for k in v)),
    )
    report.add_argument(
        "--sections",
        metavar="S1,S2,...",
        help="comma-separated experiments to run, in page order ('all': every "
        "one; clean always runs): "
        + "; ".join(f"{name}: {text}" for name, text in SECTIONS.items())
        + " (default: "
        + ",".join(_DEFAULTS.sections)
        + "; with --full: all)",
    )
    report.add_argument(
        "--full",
        action="store_true",
        help="every section at the papers' settings, the curves on every test "
        "image (longer than the default run; see the docs' command-line page)",
    )
    attacks.add_argument(
        "--eps-grid",
        type=_grid(float),
        metavar="E1,E2,...",
        help="comma-separated eps values of the accuracy-vs-eps curves (eps = 0, "
        "the clean accuracy, is always drawn) "
        + _default("eps_grid", lambda v: ",".join(f"{e:g}" for e in v)),
    )
    gap = report.add_argument_group("the AdvKNN gap (section advknn-gap)")
    gap.add_argument(
        "--gap-eps",
        type=_grid(float),
        metavar="E1,E2,...",
        help="comma-separated FGSM / BIM budgets where FGSM through the CNN leaves "
        "room " + _default("gap_eps", lambda v: ",".join(f"{e:g}" for e in v)),
    )
    gap.add_argument(
        "--cw-steps",
        type=_positive_int,
        metavar="N",
        help="Carlini-Wagner Adam steps per binary-search step " + _default("cw_steps"),
    )
    gap.add_argument(
        "--boundary-eps",
        type=_positive_float,
        help="AdvKNNAttack(boundary_eps=) of the head also trained near the "
        "boundary " + _default("boundary_eps"),
    )
    gap.add_argument(
        "--gap-train-sizes",
        type=_grid(int),
        metavar="N1,N2,...",
        help="comma-separated smaller training sets the gap is also measured on, "
        "with k and the calibration set scaled with them; sizes not below the "
        "training set are skipped (default: none; with --full: 1000,2000)",
    )
    _add_verbosity(report)

    train_cmd = command("train", "train the CNN, fit the DkNN and save them in --out")
    train_cmd.add_argument(
        "--out", default="skdknn_model", metavar="DIR", help="output directory"
    )
    _add_data_options(train_cmd)
    _add_model_options(train_cmd)
    _add_verbosity(train_cmd)

    attack_cmd = command(
        "attack",
        "attack the test images of a model saved by `train` or `report` and "
        "save the adversarial set (.npz)",
    )
    attack_cmd.add_argument(
        "--model", required=True, metavar="DIR", help="directory of the model"
    )
    attack_cmd.add_argument(
        "--method",
        choices=ATTACKS,
        default="fgsm",
        help="fgsm / bim through the CNN; advknn-*: through a deep kNN block "
        "(DkNNB) of --layer (a report's saved heads are reused when the settings "
        "match)",
    )
    attack_cmd.add_argument(
        "--out",
        type=_output_file,
        default="adversarial.npz",
        metavar="FILE",
        help="output file",
    )
    attack_cmd.add_argument(
        "--eps", type=_positive_float, default=0.25, help="L-infinity budget"
    )
    attack_cmd.add_argument(
        "--step", type=_positive_float, default=0.01, help="BIM step size"
    )
    attack_cmd.add_argument(
        "--n-iter", type=_positive_int, default=100, metavar="N", help="BIM iterations"
    )
    attack_cmd.add_argument(
        "--n-samples",
        type=_positive_int,
        metavar="N",
        help="attack the first N test images (default: all)",
    )
    advknn = attack_cmd.add_argument_group("AdvKNN (--method advknn-*)")
    advknn.add_argument(
        "--layer",
        help="attacked layer, or 'all' (default: the model's setting, relu3)",
    )
    advknn.add_argument(
        "--lam",
        type=_positive_float,
        help="weight of the cross-entropy term of the DkNNB loss (default: the "
        "model's setting, 0.3)",
    )
    advknn.add_argument(
        "--head-epochs",
        type=_positive_int,
        metavar="N",
        help="DkNNB training epochs (default: the model's setting, 30; 5 for a "
        "--quick model)",
    )
    advknn.add_argument(
        "--no-consistency",
        action="store_true",
        help="train the head with cross-entropy only (the paper's DkNNB row "
        "without CL)",
    )
    _add_verbosity(attack_cmd)

    explain_cmd = command(
        "explain",
        "draw a test image and its nearest training images at every layer",
    )
    explain_cmd.add_argument(
        "--model", required=True, metavar="DIR", help="directory of the model"
    )
    explain_cmd.add_argument(
        "--index", type=int, default=0, help="test image index (negative: from the end)"
    )
    explain_cmd.add_argument(
        "--adversarial",
        metavar="FILE",
        help="take the image from this adversarial set (.npz) (default: from the "
        "test set)",
    )
    explain_cmd.add_argument(
        "--n-neighbors",
        type=_positive_int,
        default=5,
        metavar="K",
        help="neighbours shown per layer",
    )
    explain_cmd.add_argument(
        "--out",
        type=_output_file,
        default="explanation.png",
        metavar="FILE",
        help="PNG file",
    )
    _add_verbosity(explain_cmd)
    return parser


def _verbosity(args: argparse.Namespace) -> int:
    """0 with -q; else 1 plus one per -v."""
    return 0 if args.quiet else int(args.verbose)


def _config(args: argparse.Namespace) -> ReportConfig:
    overrides: dict[str, Any] = {
        "out": args.out,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "ood_dir": getattr(args, "ood_dir", None),  # report only
        "train_size": args.train_size,
        "test_size": args.test_size,
        "max_epochs": args.epochs,
        "n_neighbors": args.n_neighbors,
        "metric": args.metric,
        "calibration_size": args.calibration_size,
        "random_state": args.random_state,
        "backend": args.backend,
        "net": args.net,
        "reuse": False if args.no_reuse else None,
        "verbose": _verbosity(args),
    }
    if args.data_dir is not None and args.dataset is None:
        overrides["dataset"] = "mnist"
    for name in ("eps", "step", "n_iter", "cw_steps", "boundary_eps"):
        overrides[name] = getattr(args, name, None)
    for option in ("eps_grid", "k_grid", "gap_eps", "gap_train_sizes"):
        grid = getattr(args, option, None)
        if grid is not None:
            overrides[option] = grid  # parsed and checked by _grid
    sections = getattr(args, "sections", None)
    if sections is not None:
        overrides["sections"] = parse_sections(sections)
    config = ReportConfig.from_overrides(
        args.quick, getattr(args, "full", False), **overrides
    )
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
                verbose=_verbosity(args),
            )
        else:
            explain(
                args.model,
                args.index,
                args.out,
                adversarial=args.adversarial,
                n_neighbors=args.n_neighbors,
                verbose=_verbosity(args),
            )
    except (OSError, ValueError) as error:
        print(f"skdknn {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
