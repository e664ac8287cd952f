"""Input shapes: images (n, C, H, W) or flat rows (n, d)."""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["as_flat_rows", "check_input_shape"]


def as_flat_rows(X: Any) -> tuple[Any, tuple[int, ...] | None]:
    """Flatten a stack of images to rows; pass 2-D (and lower) input through.

    Returns the rows and the image shape ``(C, H, W)`` (None for flat input).
    ``(n, H, W)`` is read as single-channel images. The result is a view where
    possible: the caller validates (and copies) it, and never writes to it.
    """
    if sp.issparse(X) or hasattr(X, "iloc"):
        return X, None
    if not hasattr(X, "ndim"):
        X = np.asarray(X)
    if X.ndim <= 2:
        return X, None
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim > 4:
        raise ValueError(
            f"Expected images of shape (n_samples, channels, height, width) or flat "
            f"rows (n_samples, n_features); got an array of shape {X.shape}."
        )
    return X.reshape(X.shape[0], -1), tuple(int(s) for s in X.shape[1:])


def check_input_shape(
    input_shape: Any, image_shape: tuple[int, ...] | None, n_features: int
) -> tuple[int, ...] | None:
    """The network's input shape, from the images or the ``input_shape`` parameter."""
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if image_shape is not None and shape != image_shape:
            raise ValueError(
                f"input_shape={shape} does not match the shape of the images in X, "
                f"{image_shape}."
            )
        if prod(shape) != n_features:
            raise ValueError(
                f"input_shape={shape} holds {prod(shape)} values but X has "
                f"{n_features} features per row."
            )
        return shape
    return image_shape
