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
    "HEAD_SETTINGS",
    "MODEL_SETTINGS",
    "ReportConfig",
]

#: Datasets the command line knows (``embedded``: the 5,000-image real-MNIST
#: sample that ships with skdknn).
DATASETS = ("embedded", "mnist", "fashion-mnist")


@dataclass
class ReportConfig:
    """Everything that decides what ``skdknn report`` computes.

    The defaults are the DkNN and AdvKNN papers' MNIST settings (DESIGN.md, 3) on
    the embedded sample: the paper CNN (trained for 15 epochs: the paper's 6-8
    epochs are on 60,000 images, ours on 4,000), k = 75, 750 calibration images,
    FGSM eps = 0.25, BIM eps = 0.25 / step 0.01 / 100 iterations, DkNNB lambda =
    0.3 on the third layer, exact neighbour search (``backend``: any name or recipe
    of :func:`skdknn.neighbors.make_backend`).
    """

    dataset: str = "embedded"
    data_dir: str | None = None
    out: str = "skdknn_report"
    train_size: int | None = None
    test_size: int = 1000
    max_epochs: int = 15
    n_neighbors: int = 75
    metric: str = "euclidean"
    backend: str = "exact"
    calibration_size: int = 750
    attacked_layer: str = "relu3"
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
    batch_size: int = 256
    random_state: int = 0
    reuse: bool = True
    verbose: int = 1

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
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**settings)

    @classmethod
    def from_overrides(cls, quick: bool = False, **overrides: Any) -> ReportConfig:
        """The default (or quick) settings with the given non-None values."""
        given = {k: v for k, v in overrides.items() if v is not None}
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


#: Settings the trained network and the fitted DkNN depend on.
MODEL_SETTINGS = (
    "dataset",
    "data_dir",
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

#: Settings the adversarial sets depend on (besides the heads, and eps, which is
#: part of each set's file name).
ATTACK_SETTINGS = ("step", "n_iter")
