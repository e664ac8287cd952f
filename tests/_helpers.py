"""Helpers shared by the test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skdknn import DeepKNNClassifier

TINY = dict(
    n_neighbors=5, calibration_size=40, max_epochs=10, batch_size=64, random_state=0
)


def tiny(**params: Any) -> DeepKNNClassifier:
    """A DkNN small enough to train in a second on tabular data (``TINY`` defaults,
    overridden by ``params``)."""
    return DeepKNNClassifier(**{**TINY, **params})


# a report of a few seconds: tiny data, 1 epoch, small k (the --quick eps values)
TINY_REPORT = [
    "--quick",
    "--epochs",
    "1",
    "--train-size",
    "600",
    "--test-size",
    "60",
    "--calibration-size",
    "100",
    "--n-neighbors",
    "10",
]


def saved_set(directory: Path, name: str, eps: float | None = None) -> Path:
    """The one adversarial-set file ``name`` (at ``eps``) that a report saved in
    ``directory``, whatever its image count (``<name>_eps<eps>_n<images>.npz``)."""
    budget = "" if eps is None else f"_eps{eps:g}"
    paths = sorted(Path(directory).glob(f"{name}{budget}_n*.npz"))
    assert len(paths) == 1, f"expected one {name}{budget} set, found {paths}"
    return paths[0]
