"""Helpers shared by the test modules (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from skdknn import DeepKNNClassifier

TINY = dict(
    n_neighbors=5, calibration_size=40, max_epochs=10, batch_size=64, random_state=0
)


def tiny(**params: Any) -> DeepKNNClassifier:
    """A DkNN small enough to train in a second on tabular data (``TINY`` defaults,
    overridden by ``params``)."""
    return DeepKNNClassifier(**{**TINY, **params})


def half_dead_net() -> nn.Module:
    """ReLU logits that are all zero (a flat loss) when x[0] > 0.5: inputs of 4
    features there have an exactly zero loss gradient."""
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(
            torch.tensor([[-1.0, 0, 0, 0], [-2, 0, 0, 0], [-3, 0, 0, 0]])
        )
        net[0].bias.copy_(torch.tensor([0.5, 1.0, 1.5]))
    return net


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
