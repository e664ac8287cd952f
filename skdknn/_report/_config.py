"""Settings of ``skdknn report`` and of its sub-commands."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .._version import __version__

__all__ = [
    "ATTACK_SETTINGS",
    "DATASETS",
    "DEFAULT_SECTIONS",
    "FULL_ONLY",
    "HEAD_SETTINGS",
    "MODEL_SETTINGS",
    "NETS",
    "NET_TITLES",
    "SECTIONS",
    "ReportConfig",
    "parse_sections",
]

#: Datasets the command line knows (``embedded``: the 5,000-image real-MNIST
#: sample that ships with skdknn).
DATASETS = ("embedded", "mnist", "fashion-mnist")

#: Networks of ``--net``: the :mod:`skdknn.nets` class each name trains.
NETS = {
    "paper-cnn": "DkNNPaperCNN",
    "bn-cnn": "BatchNormCNN",
    "lenet5": "LeNet5",
}

#: Titles of the networks of :data:`NETS` on the report page.
NET_TITLES = {
    "paper-cnn": "DkNN paper CNN",
    "bn-cnn": "BatchNorm CNN (thesis)",
    "lenet5": "LeNet-5",
}

#: The report's sections (experiments), in page order, with what each shows.
SECTIONS = {
    "clean": "accuracy and credibility on clean test images (AdvKNN Table 1)",
    "choosing-k": "the DkNN with other k and metrics on the same network",
    "table2": "FGSM / BIM origin, DkNNB, DkNNB+CL at eps (AdvKNN Table 2)",
    "transfer": "the Table 2 sets on a LeNet-5 trained on clean images (AdvKNN "
    "Table 3)",
    "k-sweep": "attack success against k for FGSM, BIM, AdvKNN (AdvKNN Fig. 7)",
    "detection": "credibility of clean vs AdvKNN inputs, detection at a "
    "threshold (AdvKNN Fig. 5)",
    "layers": "the DkNNB+CL head on each layer, and MeanAttack (AdvKNN Fig. 4)",
    "advknn-gap": "the AdvKNN gap where FGSM leaves room: origin / DkNNB / "
    "DkNNB+CL / +boundary head for FGSM, BIM and CW, and (--full) against the "
    "training-set size",
    "thesis-fgsm": "FGSM at the thesis's eps grid, its reliability diagrams and "
    "correct-neighbour histograms at eps 0.15 (Topolewski Figs. 4.3-4.5)",
    "backends": "DkNN accuracy against the FGSM budget with each neighbour backend "
    "(exact, LSH, Annoy, PyNNDescent), their times and recall (Topolewski Fig. 4.7)",
    "bn-cnn": "the BatchNorm CNN against the paper CNN: accuracy against the FGSM "
    "budget and reliability diagrams (Topolewski Figs. 4.8-4.10)",
    "ood": "credibility and softmax on inputs of no class, with reliability "
    "diagrams (Topolewski Fig. 4.6)",
    "curves": "accuracy against eps",
    "neighbours": "share of true-label neighbours per layer",
}

#: Sections only ``--full`` (or ``--sections``) runs: each costs minutes at the
#: default settings (heads on every layer; four neighbour indexes; a second CNN;
#: the AdvKNN gap's extra head and attacks).
FULL_ONLY = ("layers", "advknn-gap", "backends", "bn-cnn")

#: Sections of a default run: all but the expensive ones (``--full`` runs all).
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in FULL_ONLY)


def parse_sections(text: str) -> list[str]:
    """``--sections`` value: comma-separated names of :data:`SECTIONS` (``all``:
    every one), in page order; ``clean`` is always included."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(SECTIONS)
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise ValueError(
            f"--sections expects comma-separated names among {list(SECTIONS)} "
            f"or 'all'; got {text!r}."
        )
    return [name for name in SECTIONS if name in names or name == "clean"]


@dataclass
class ReportConfig:
    """Everything that decides what ``skdknn report`` computes.

    The defaults are the DkNN and AdvKNN papers' MNIST settings (DESIGN.md, 3) on
    the embedded sample: the paper CNN (trained for 15 epochs: the paper's 6-8
    epochs are on 60,000 images, ours on 4,000), k = 75, 750 calibration images,
    FGSM eps = 0.25, BIM eps = 0.25 / step 0.01 / 100 iterations, DkNNB lambda =
    0.3 on the third layer, exact neighbour search (``backend``: any name or recipe
    of :func:`skdknn.neighbors.make_backend`). ``net`` names the network of
    :data:`NETS`; ``attacked_layer`` left empty is its third DkNN layer (the
    papers'). ``sections`` lists the experiments run (:data:`SECTIONS`).
    """

    dataset: str = "embedded"
    data_dir: str | None = None
    # the IDX images file the ood section reads its inputs of no class from
    # (None: the built-in noise, shuffled images and photograph patches)
    ood_dir: str | None = None
    out: str = "skdknn_report"
    train_size: int | None = None
    test_size: int = 1000
    max_epochs: int = 15
    n_neighbors: int = 75
    metric: str = "euclidean"
    backend: str = "exact"
    calibration_size: int = 750
    net: str = "paper-cnn"
    attacked_layer: str = ""
    eps: float = 0.25
    step: float = 0.01
    n_iter: int = 100
    lam: float = 0.3
    head_epochs: int = 30
    eps_grid: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3]
    )
    curve_size: int = 500
    ood_size: int = 500
    variants: list[tuple[int, str]] = field(
        default_factory=lambda: [(75, "cosine"), (25, "euclidean"), (10, "cosine")]
    )
    sections: list[str] = field(default_factory=lambda: list(DEFAULT_SECTIONS))
    # AdvKNN Fig. 7: the k of the attack-success-against-k curves
    k_grid: list[int] = field(default_factory=lambda: [5, 10, 25, 50, 75, 100])
    # AdvKNN Fig. 5: budgets of the AdvKNN sets whose credibility is shown, and the
    # credibility threshold below which an input is flagged
    detection_eps: list[float] = field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.25]
    )
    detection_threshold: float = 0.5
    # the thesis's FGSM budgets (Topolewski, Figs. 4.2-4.5)
    thesis_eps: list[float] = field(
        default_factory=lambda: [0.025, 0.05, 0.075, 0.1, 0.125, 0.15]
    )
    # AdvKNN Table 3: training epochs of the LeNet-5 the adversarial sets transfer to
    transfer_epochs: int = 15
    # the AdvKNN gap: FGSM / BIM budgets where FGSM through the CNN leaves room, CW's
    # Adam steps per binary-search step, the +boundary head's AdvKNNAttack
    # boundary_eps, and the smaller training sets it is also measured on (--full)
    gap_eps: list[float] = field(default_factory=lambda: [0.1, 0.15])
    cw_steps: int = 100
    boundary_eps: float = 0.3
    gap_train_sizes: list[int] = field(default_factory=list)
    batch_size: int = 256
    random_state: int = 0
    reuse: bool = True
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.net not in NETS:
            raise ValueError(f"Unknown net {self.net!r}; expected one of {list(NETS)}.")
        if not self.attacked_layer:
            from .. import nets

            # the papers attack the third layer
            self.attacked_layer = getattr(nets, NETS[self.net]).dknn_layers[2]

    @classmethod
    def quick(cls, **overrides: Any) -> ReportConfig:
        """A run of a minute or two: fewer images, epochs, steps and eps values."""
        settings: dict[str, Any] = {
            "train_size": 2000,
            "test_size": 200,
            "max_epochs": 3,
            "n_neighbors": 25,
            "calibration_size": 300,
            "n_iter": 10,
            "step": 0.025,
            "head_epochs": 5,
            "eps_grid": [0.1, 0.25],
            "curve_size": 100,
            "ood_size": 100,
            "variants": [(25, "cosine")],
            "k_grid": [5, 25, 75],
            "detection_eps": [0.02, 0.1, 0.25],
            "transfer_epochs": 3,
            "cw_steps": 10,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)

    @classmethod
    def full(cls, **overrides: Any) -> ReportConfig:
        """Every section at the papers' settings: the curves on every test image."""
        settings: dict[str, Any] = {
            "sections": list(SECTIONS),
            "gap_train_sizes": [1000, 2000],
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        settings.setdefault("curve_size", settings.get("test_size", cls.test_size))
        return cls(**settings)

    @classmethod
    def from_overrides(
        cls, quick: bool = False, full: bool = False, **overrides: Any
    ) -> ReportConfig:
        """The default (quick, or full) settings with the given non-None values."""
        if quick and full:
            raise ValueError("--quick and --full exclude each other; choose one.")
        given = {k: v for k, v in overrides.items() if v is not None}
        if full:
            return cls.full(**given)
        return cls.quick(**given) if quick else cls(**given)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def key(self, *names: str, parent: str = "") -> str:
        """Short hash of the named settings, the skdknn version and ``parent``
        (the key of what the cached thing was computed from).

        Cached models, heads and adversarial sets are reused only under the same key.
        """
        values = {name: getattr(self, name) for name in names}
        values["_version"] = __version__
        values["_parent"] = parent
        text = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Settings the trained network and the fitted DkNN depend on (besides the data
#: itself, hashed apart: not ``data_dir``, whose files may be rewritten in place
#: and whose relative path means other files from another directory).
MODEL_SETTINGS = (
    "net",
    "dataset",
    "train_size",
    "test_size",
    "max_epochs",
    "n_neighbors",
    "metric",
    "backend",
    "calibration_size",
    "random_state",
)

#: Settings the DkNNB heads depend on (besides the model).
HEAD_SETTINGS = ("attacked_layer", "lam", "head_epochs", "random_state")

#: Settings the adversarial sets depend on (besides the heads, the images and the
#: iterations, which are checked apart, and eps, part of each set's file name);
#: boundary_eps trains the advknn-gap section's +boundary head.
ATTACK_SETTINGS = ("step", "n_iter", "boundary_eps")
