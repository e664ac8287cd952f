"""Helpers shared by the plots: figures, images, checks, and the scores of a model."""

from __future__ import annotations

from collections.abc import Mapping
from math import isqrt, prod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from .._activations import eval_mode
from .._validation import as_flat_rows
from ..attacks._target import resolve_target
from ..metrics import _check_scores as check_1d

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "as_images",
    "check_1d",
    "check_mapping",
    "check_unit_interval",
    "display_range",
    "dknn_predictions",
    "figure_and_axes",
    "network_softmax",
]


def figure_and_axes(ax: Axes | None, **subplots: Any) -> tuple[Figure, Axes]:
    """The figure of ``ax``, or a new figure with one axes when ``ax`` is None."""
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    import matplotlib.pyplot as plt

    fig, new_ax = plt.subplots(**subplots)
    return fig, new_ax


def check_unit_interval(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """A non-empty 1-D float array with every value in [0, 1]."""
    arr = check_1d(values, name)
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"{name} must lie in [0, 1]; got values in [{arr.min():.4g}, "
            f"{arr.max():.4g}]."
        )
    return arr


def check_mapping(mapping: Any, name: str) -> Mapping[Any, Any]:
    """A non-empty mapping (the plots draw one artist or panel per key)."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            f"{name} must be a non-empty mapping (e.g. a dict); got "
            f"{type(mapping).__name__}."
        )
    return mapping


def as_images(X: Any, input_shape: tuple[int, ...] | None = None) -> NDArray:
    """Images ready for ``imshow``: (n, height, width) grey or (n, height, width, 3).

    ``X`` holds images (n, 1 or 3, H, W) or (n, H, W), or flat rows: reshaped to
    ``input_shape`` when given, else read as square single-channel images.
    """
    arr = np.asarray(X)
    if arr.ndim == 2:
        n_features = arr.shape[1]
        if input_shape is not None and prod(input_shape) == n_features:
            return as_images(arr.reshape(arr.shape[0], *input_shape))
        side = isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"Cannot show rows of {n_features} features as images: they are not "
                "square; pass images of shape (n, channels, height, width)."
            )
        return arr.reshape(arr.shape[0], side, side)
    if arr.ndim == 3:
        return arr
    if arr.ndim == 4 and arr.shape[1] in (1, 3):
        return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    raise ValueError(
        "Expected images of shape (n, 1 or 3, height, width) or (n, height, width), "
        f"or flat rows of square images; got shape {arr.shape}."
    )


def display_range(*images: NDArray) -> tuple[float, float]:
    """Common grey-level range: [0, 1] for images inside it, else their min and max."""
    low = min(float(np.min(img)) for img in images)
    high = max(float(np.max(img)) for img in images)
    if low >= 0 and high <= 1:
        return 0.0, 1.0
    return low, high


def dknn_predictions(dknn: Any, X: Any) -> tuple[NDArray, NDArray[np.float64]]:
    """Predictions and credibility of a fitted DkNN from one neighbour search."""
    result = dknn.predict_with_credibility(X)
    return result.prediction, result.credibility


def network_softmax(
    estimator: Any, X: Any, batch_size: int = 256
) -> tuple[NDArray[np.float64], NDArray]:
    """Softmax of the network's logits, and the labels of its outputs.

    ``estimator`` is a fitted DkNN (its network), a fitted skorch net or a torch
    module, optionally in ``FrozenEstimator``. Labels are the model's ``classes_``,
    or the output indices when it has none.
    """
    target = resolve_target(estimator)
    X_flat, image_shape = as_flat_rows(X)
    X_flat = np.asarray(X_flat, dtype=np.float32)
    shape = target.input_shape or image_shape
    X_net = X_flat if shape is None else X_flat.reshape(X_flat.shape[0], *shape)
    if X_net.shape[0] == 0:
        raise ValueError("X holds no samples.")
    chunks = []
    with eval_mode(target.module), torch.inference_mode():
        for start in range(0, X_net.shape[0], batch_size):
            batch = torch.from_numpy(
                np.ascontiguousarray(X_net[start : start + batch_size])
            )
            logits = target.module(batch.to(target.device))
            chunks.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
    # rounding can push the largest probability a hair above one
    proba = np.clip(np.concatenate(chunks), 0.0, 1.0)
    classes = np.arange(proba.shape[1]) if target.classes is None else target.classes
    return proba, classes
