"""Input checks shared by the estimators: shapes, value ranges, class sizes.

Images are ``(n, C, H, W)`` (channels first, as torch takes them) or flat rows
``(n, d)``. The checks turn common mistakes (channels-last images, a single image
without its batch axis, pixels in [0, 255] for a model fitted on [0, 1]) into
errors or warnings that say what was expected.
"""

from __future__ import annotations

from math import prod
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from ._warnings import warn
from .exceptions import InputRangeWarning

__all__ = [
    "as_flat_rows",
    "check_fitted_shape",
    "check_input_shape",
    "check_n_neighbors",
    "check_neighbors_per_class",
    "check_value_range",
    "value_range",
]


def check_n_neighbors(k: Any) -> int:
    """``k`` as an int; ValueError unless it is a positive integer (not a bool).

    Shared by every ``kneighbors`` and the backends, so that ``-1``, ``2.0`` or
    ``True`` get the same message wherever they are passed.
    """
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, Integral) or k < 1:
        raise ValueError(f"n_neighbors must be a positive integer; got {k!r}.")
    return int(k)


# channel counts of common images: grey, RGB, RGBA
_CHANNELS = (1, 3, 4)


def as_numpy(X: Any) -> Any:
    """X itself when it is a numpy array (a memmap stays one), else ``np.asarray(X)``
    (lists, torch tensors and other array-likes whose dtype is not numpy's)."""
    return X if isinstance(getattr(X, "dtype", None), np.dtype) else np.asarray(X)


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
    image_shape = tuple(int(s) for s in X.shape[1:])
    # an explicit width: reshape(0, -1) is ambiguous for an empty batch
    return X.reshape(X.shape[0], prod(image_shape)), image_shape


def _looks_channels_last(shape: tuple[int, ...]) -> bool:
    """(H, W, C) with C a usual channel count and H not one (e.g. (28, 28, 1))."""
    return len(shape) == 3 and shape[2] in _CHANNELS and shape[0] not in _CHANNELS


def _channels_last_message(shape: tuple[int, ...]) -> str:
    first = (shape[2], shape[0], shape[1])
    return (
        f"X holds images of shape {shape}, which looks channels-last (n, H, W, C); "
        f"skdknn takes channels-first images (n, C, H, W), here {first}: pass "
        "np.moveaxis(X, -1, 1)"
    )


def _same_layout(
    image_shape: tuple[int, ...] | None, input_shape: tuple[int, ...] | None
) -> bool:
    """Whether X's samples (``image_shape``, from :func:`as_flat_rows`) have the
    network's ``input_shape``. A 3-D X ``(n, A, B)`` reads as one-channel images
    ``(1, A, B)``, unless the network takes samples of shape ``(A, B)`` (a Conv1d's
    ``(channels, length)``): then they are that."""
    return image_shape == input_shape or (
        image_shape is not None
        and input_shape is not None
        and len(input_shape) == 2
        and image_shape == (1, *input_shape)
    )


def check_input_shape(
    input_shape: Any, image_shape: tuple[int, ...] | None, n_features: int
) -> tuple[int, ...] | None:
    """The network's input shape, from the images or the ``input_shape`` parameter."""
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if image_shape is not None and not _same_layout(image_shape, shape):
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
    if image_shape is not None and _looks_channels_last(image_shape):
        raise ValueError(
            _channels_last_message(image_shape)
            + f". If your network does take {image_shape}, say so with "
            f"input_shape={image_shape}."
        )
    return image_shape


def check_fitted_shape(
    X: Any,
    image_shape: tuple[int, ...] | None,
    fitted_shape: tuple[int, ...] | None,
    n_features: int,
    owner: str,
) -> None:
    """Raise when X's layout does not match the inputs ``owner`` was fitted on.

    Names the usual mistakes: channels-last images, and a single image given
    without its batch axis (``(28, 28)`` or ``(3, 32, 32)``). Flat rows of the
    right width are always accepted.
    """
    # X.shape, not np.shape(X): array-likes may refuse numpy's array functions
    shape = getattr(X, "shape", None)
    shape = tuple(int(s) for s in (np.asarray(X).shape if shape is None else shape))
    if image_shape is None:
        valid = fitted_shape is None or len(shape) != 2 or shape[1] == n_features
    else:
        valid = _same_layout(image_shape, fitted_shape)
    if valid:
        return  # flat rows of another width: validate_data names the widths
    if fitted_shape is not None and (
        shape == fitted_shape or (fitted_shape[0] == 1 and shape == fitted_shape[1:])
    ):
        raise ValueError(
            f"X of shape {shape} looks like a single image; {owner} takes a batch "
            f"of images (n, C, H, W): add the batch axis with X[None] (one image "
            f"of shape {fitted_shape})."
        )
    if image_shape is None:
        return
    channels_first = (image_shape[-1], *image_shape[:-1])
    if _looks_channels_last(image_shape) and channels_first == fitted_shape:
        raise ValueError(_channels_last_message(image_shape) + ".")
    fitted = (
        f"images of shape {fitted_shape}."
        if fitted_shape is not None
        else f"flat rows of {n_features} features."
    )
    raise ValueError(
        f"X holds images of shape {image_shape}, but this {owner} was fitted on "
        + fitted
    )


def value_range(X_flat: NDArray) -> NDArray[np.float64]:
    """The smallest and largest value of X, recorded at fit as ``input_range_``."""
    if sp.issparse(X_flat):
        low, high = X_flat.min(), X_flat.max()
    else:
        low, high = np.min(X_flat), np.max(X_flat)
    return np.array([low, high], dtype=np.float64)


def check_value_range(X_flat: NDArray, fitted_range: Any, owner: str) -> None:
    """Warn when X's values lie far outside the range seen at fit.

    "Far" means more than the fitted range's own width (at least 1) beyond it:
    for a model fitted on [0, 1], values below -1 or above 2. New points a little
    beyond the training extremes are normal and stay quiet; pixels in [0, 255] given
    to a model fitted on [0, 1] (a mistake that silently costs accuracy) warn with
    an :class:`~skdknn.exceptions.InputRangeWarning`.
    """
    if fitted_range is None or X_flat.shape[0] == 0:
        return
    low, high = (float(v) for v in fitted_range)
    margin = max(high - low, 1.0)
    x_low, x_high = value_range(X_flat)
    if x_low >= low - margin and x_high <= high + margin:
        return
    warn(
        f"X has values in [{x_low:.4g}, {x_high:.4g}], far outside the range "
        f"[{low:.4g}, {high:.4g}] this {owner} was fitted on: its outputs on such "
        "inputs mean little. Scale X as the training data was (e.g. images "
        "divided by 255 for a model fitted on [0, 1]).",
        InputRangeWarning,
    )


def check_neighbors_per_class(
    y_index: NDArray[np.intp], n_neighbors: int, classes: NDArray
) -> None:
    """Warn when a class has fewer indexed points than ``n_neighbors``.

    Such a class can never fill a neighbourhood: even its most typical inputs get
    at least ``k - n_c`` disagreeing neighbours per layer, so its p-values and
    credibility are biased low and the majority vote favours larger classes.
    """
    counts = np.bincount(y_index, minlength=classes.size)
    j = int(np.argmin(counts))
    if counts[j] >= n_neighbors:
        return
    warn(
        f"n_neighbors={n_neighbors} exceeds the {counts[j]} indexed points of class "
        f"{np.asarray(classes)[j].tolist()!r} (after the calibration split): that "
        "class can never fill a neighbourhood, so its p-values and credibility are "
        "biased low. Lower n_neighbors, or add samples of the small classes.",
        UserWarning,
    )
