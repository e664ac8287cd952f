"""Out-of-distribution images: uniform noise, shuffled pixels, natural-image patches."""

from __future__ import annotations

from math import isqrt
from numbers import Integral
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import check_random_state

__all__ = ["OOD_KINDS", "make_ood_images"]

#: Valid values of ``kind`` for :func:`make_ood_images`.
OOD_KINDS = ("noise", "shuffled", "patches")

# ITU-R BT.601 luma weights: the grey level PIL's "L" mode gives
_LUMA = np.array([0.299, 0.587, 0.114])

# crops are at most this many times the image size before block averaging, so that
# a patch keeps some structure (edges, texture) rather than a blur of a whole photo
_MAX_BLOCK = 8

# inputs may sit this far outside [0, 1] (float rounding) without an error
_RANGE_TOLERANCE = 1e-6


def make_ood_images(
    X_like: Any,
    n_samples: int | None = None,
    *,
    kind: str = "noise",
    random_state: Any = None,
) -> NDArray[np.floating]:
    """Out-of-distribution inputs shaped like a set of images.

    Inputs no model trained on ``X_like`` should be sure about, to compare how DkNN
    credibility and the softmax confidence react to them (the DkNN paper's
    out-of-distribution experiment). The result has the shape (except the number of
    rows), dtype and [0, 1] range of ``X_like``.

    Parameters
    ----------
    X_like : ndarray of shape (n, channels, height, width), (n, height, width) or \
            (n, n_features)
        Float images scaled to [0, 1], as the :mod:`skdknn.datasets` loaders return
        them. Flat rows are square single-channel images for ``kind="patches"``.
    n_samples : int, default=None
        Number of images to make; ``None`` makes ``len(X_like)``.
    kind : {"noise", "shuffled", "patches"}, default="noise"
        ``"noise"``: every pixel uniform in [0, 1]. ``"shuffled"``: images of ``X_like``
        (each drawn once before any is drawn again) whose pixel positions are
        permuted, independently per image: the pixel histogram of real
        images without their shapes. ``"patches"``: random crops of scikit-learn's
        sample photos (:func:`sklearn.datasets.load_sample_images`, a Chinese temple
        and a flower), 1 to 8 times the image size, block-averaged down to it,
        converted to grey levels for single-channel images and scaled to [0, 1].
    random_state : int, RandomState instance or None, default=None
        Seeds the draws; the same integer gives the same images.

    Returns
    -------
    X_ood : ndarray of shape (n_samples, ...) like ``X_like``
        Values in [0, 1], dtype of ``X_like``.

    Raises
    ------
    ValueError
        For an unknown ``kind``, non-float or out-of-range ``X_like``, a shape that is
        not a stack of images (or, for ``"patches"``, flat rows that are not square
        images), or images larger than the sample photos.

    See Also
    --------
    skdknn.metrics.ood_auroc : How well a score separates them from real inputs.
    skdknn.plotting.plot_ood : Their scores against the in-distribution ones.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.datasets import make_ood_images
    >>> X = np.random.default_rng(0).uniform(size=(20, 1, 28, 28)).astype(np.float32)
    >>> noise = make_ood_images(X, kind="noise", random_state=0)
    >>> noise.shape, noise.dtype
    ((20, 1, 28, 28), dtype('float32'))
    >>> patches = make_ood_images(X, 5, kind="patches", random_state=0)
    >>> patches.shape, bool(patches.min() >= 0 and patches.max() <= 1)
    ((5, 1, 28, 28), True)
    """
    if kind not in OOD_KINDS:
        raise ValueError(f"Unknown kind {kind!r}; choose one of {list(OOD_KINDS)}.")
    X = _check_images(X_like)
    n = _check_n_samples(n_samples, X.shape[0])
    rng = check_random_state(random_state)
    shape = (n, *X.shape[1:])
    if kind == "noise":
        return rng.uniform(0.0, 1.0, size=shape).astype(X.dtype)
    if kind == "shuffled":
        return _shuffled_pixels(X, n, rng).reshape(shape)
    channels, height, width = _patch_shape(X)
    patches = _natural_patches(n, channels, height, width, rng)
    return patches.astype(X.dtype).reshape(shape)


def _check_images(X_like: Any) -> NDArray[np.floating]:
    X = np.asarray(X_like)
    if X.ndim not in (2, 3, 4) or X.shape[0] == 0 or X[0].size == 0:
        raise ValueError(
            "X_like must be a non-empty stack of images (n, channels, height, width) "
            f"or (n, height, width), or flat rows (n, n_features); got shape {X.shape}."
        )
    if not np.issubdtype(X.dtype, np.floating):
        raise ValueError(
            f"X_like must hold float images scaled to [0, 1]; got dtype {X.dtype} "
            "(divide 8-bit images by 255)."
        )
    low, high = float(X.min()), float(X.max())
    if not (low >= -_RANGE_TOLERANCE and high <= 1 + _RANGE_TOLERANCE):
        raise ValueError(
            f"X_like must hold images scaled to [0, 1]; its values range over "
            f"[{low:.4g}, {high:.4g}]."
        )
    return X


def _check_n_samples(n_samples: Any, default: int) -> int:
    if n_samples is None:
        return default
    if not isinstance(n_samples, Integral) or isinstance(n_samples, bool):
        raise ValueError(f"n_samples must be a positive int; got {n_samples!r}.")
    if n_samples < 1:
        raise ValueError(f"n_samples must be a positive int; got {n_samples}.")
    return int(n_samples)


def _shuffled_pixels(
    X: NDArray[np.floating], n: int, rng: np.random.RandomState
) -> NDArray[np.floating]:
    """``n`` images of X with their pixel positions permuted, one permutation each.

    The channels of a pixel move together, so colour images keep their colours.
    """
    # every image once, in random order, before any is used again
    rounds = -(-n // X.shape[0])
    rows = np.concatenate([rng.permutation(X.shape[0]) for _ in range(rounds)])[:n]
    if X.ndim == 4:
        pixels = X[rows].reshape(n, X.shape[1], -1)
    else:  # single-channel images or flat rows
        pixels = X[rows].reshape(n, 1, -1)
    order = np.argsort(rng.random_sample((n, pixels.shape[2])), axis=1)
    return np.take_along_axis(pixels, order[:, None, :], axis=2)


def _patch_shape(X: NDArray[np.floating]) -> tuple[int, int, int]:
    """(channels, height, width) of the images in X, for natural-image patches."""
    if X.ndim == 4:
        channels, height, width = X.shape[1:]
    elif X.ndim == 3:
        channels, (height, width) = 1, X.shape[1:]
    else:
        side = isqrt(X.shape[1])
        if side * side != X.shape[1]:
            raise ValueError(
                f'kind="patches" needs images; flat rows of {X.shape[1]} features are '
                "not square single-channel images. Pass X_like as "
                "(n, channels, height, width)."
            )
        channels, height, width = 1, side, side
    if channels not in (1, 3):
        raise ValueError(
            f'kind="patches" makes grey (1 channel) or colour (3 channel) images; '
            f"X_like has {channels} channels."
        )
    return int(channels), int(height), int(width)


def _sample_photos(grey: bool) -> list[NDArray[np.float64]]:
    """scikit-learn's two sample photos as (height, width, channels) in [0, 1]."""
    from sklearn.datasets import load_sample_images

    photos = [
        np.asarray(img, dtype=np.float64) / 255.0 for img in load_sample_images().images
    ]
    if grey:
        return [(photo @ _LUMA)[:, :, None] for photo in photos]
    return photos


def _natural_patches(
    n: int, channels: int, height: int, width: int, rng: np.random.RandomState
) -> NDArray[np.float64]:
    """``n`` random crops of the sample photos, block-averaged to height x width."""
    photos = _sample_photos(grey=channels == 1)
    out = np.empty((n, channels, height, width))
    for i in range(n):
        photo = photos[rng.randint(len(photos))]
        max_block = min(photo.shape[0] // height, photo.shape[1] // width, _MAX_BLOCK)
        if max_block < 1:
            raise ValueError(
                f'kind="patches" cannot make {height}x{width} images: the sample '
                f"photos are {photo.shape[0]}x{photo.shape[1]} pixels."
            )
        block = rng.randint(1, max_block + 1)
        top = rng.randint(photo.shape[0] - block * height + 1)
        left = rng.randint(photo.shape[1] - block * width + 1)
        crop = photo[top : top + block * height, left : left + block * width]
        blocks = crop.reshape(height, block, width, block, channels)
        out[i] = blocks.mean(axis=(1, 3)).transpose(2, 0, 1)
    return out
