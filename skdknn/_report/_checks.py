"""Checks of the networks the report trains: BatchNorm running statistics still
tied to their initial values, and networks that did not learn (small settings)."""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.frozen import FrozenEstimator
from torch import nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, TensorDataset

from .._classifier import DeepKNNClassifier

__all__ = [
    "MIN_CLEAN_ACCURACY",
    "STALE_BATCHNORM_WEIGHT",
    "batchnorm_is_stale",
    "recalibrate_batchnorm",
    "undertrained_warning",
]

#: Weight the running mean / variance of a BatchNorm layer may still give their
#: initial values (0 and 1) after training, ``(1 - momentum) ** num_batches_tracked``:
#: above it they are re-estimated on the training images. The report's default and
#: --full runs (15 epochs of 7 batches of 500 rows, plus the one forward pass in
#: train mode made when the network is built: 106 updates at momentum 0.1,
#: 0.9 ** 106 = 1.4e-5) stay below it; --quick's BatchNorm CNN (3 epochs of 4
#: batches + 1: 0.9 ** 13 = 0.25) predicted one class in eval mode.
STALE_BATCHNORM_WEIGHT = 1e-3

#: Clean test accuracy below which a trained network is reported as undertrained.
#: The report's data are MNIST-like with 10 balanced classes (chance: 10 %), and
#: every network of the papers reaches 98-99 % on them; a network below 50 % did
#: not learn (too few epochs or training images), and the numbers computed on it
#: say nothing of the papers' claims.
MIN_CLEAN_ACCURACY = 0.5


def batchnorm_is_stale(momentum: float | None, num_batches_tracked: int) -> bool:
    """Whether a BatchNorm layer's running statistics still carry more than
    :data:`STALE_BATCHNORM_WEIGHT` of their initial values.

    With ``momentum`` m, the running estimates after n updates give weight
    ``(1 - m) ** n`` to their initial values; ``momentum=None`` (a cumulative
    average) gives them none once a batch was seen.
    """
    if momentum is None:
        return num_batches_tracked == 0
    return bool((1.0 - momentum) ** num_batches_tracked > STALE_BATCHNORM_WEIGHT)


def _batchnorm_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        layer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        and layer.track_running_stats
    ]


def recalibrate_batchnorm(
    dknn: DeepKNNClassifier, X: NDArray[np.float32], y: NDArray, batch_size: int
) -> bool:
    """Re-estimate the running statistics of the BatchNorm layers of ``dknn``'s
    network when :func:`batchnorm_is_stale` holds for any of them, then refit the
    DkNN on the same rows with the network frozen (its index and calibration
    scores were computed with the stale statistics).

    The statistics are torch's :func:`torch.optim.swa_utils.update_bn`: a
    cumulative average over one pass, in train mode, over the rows the network
    was trained on (``dknn.train_indices_``; never the calibration rows). Returns
    whether they were re-estimated.
    """
    module = dknn.module_
    layers = _batchnorm_layers(module)
    if not any(
        batchnorm_is_stale(
            layer.momentum,
            0 if layer.num_batches_tracked is None else int(layer.num_batches_tracked),
        )
        for layer in layers
    ):
        return False
    rows = torch.from_numpy(np.ascontiguousarray(X[dknn.train_indices_]))
    # update_bn restores the module's mode; skorch predicts in eval mode
    update_bn(DataLoader(TensorDataset(rows), batch_size=batch_size), module)
    dknn.set_params(net=FrozenEstimator(dknn.net_))
    dknn.fit(X, y)
    return True


def batchnorm_note(title: str) -> str:
    """The page's sentence on a network whose BatchNorm statistics were re-estimated."""
    return (
        f"The {title}'s BatchNorm running statistics were still tied to their "
        "initial values after training (too few updates at these settings), so "
        "they were re-estimated on its training images "
        "(torch.optim.swa_utils.update_bn) before any number was computed."
    )


def undertrained_warning(name: str, accuracy: float) -> str | None:
    """The warning on a network whose clean accuracy is below
    :data:`MIN_CLEAN_ACCURACY`, or None."""
    if accuracy >= MIN_CLEAN_ACCURACY:
        return None
    return (
        f"Warning: the {name} reaches only {100 * accuracy:.1f} % clean test "
        f"accuracy (below {100 * MIN_CLEAN_ACCURACY:.0f} %): it did not learn, and "
        "the numbers computed on it are not comparable with the papers'. Train "
        "longer (--epochs) or on more images (a larger --train-size)."
    )
