"""Loader for SVHN cropped digits (format 2, ``*_32x32.mat`` files)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np
import scipy.io
from numpy.typing import NDArray
from sklearn.utils import Bunch

from ._base import (
    Arrays,
    Remote,
    StrPath,
    check_subset,
    locate_or_fetch,
    make_result,
    resolve_data_dir,
    shuffle_rows,
    to_unit_float,
)

__all__ = ["SVHN_MD5", "SVHN_MIRRORS", "load_svhn"]

#: Valid values of ``subset``; each names the file ``<subset>_32x32.mat``.
SVHN_SUBSETS = ("train", "test", "extra")

#: Base URLs tried in order by ``load_svhn(..., download=True)``.
SVHN_MIRRORS: tuple[str, ...] = ("http://ufldl.stanford.edu/housenumbers/",)

#: MD5 checksums of the official SVHN cropped-digits files.
SVHN_MD5: Mapping[str, str] = MappingProxyType(
    {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
        "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7",
    }
)

_IMAGE_SHAPE = (32, 32, 3)
_ZERO_LABEL = 10

_SVHN_DESCR = """\
SVHN: Street View House Numbers, cropped digits
-----------------------------------------------
Colour 32x32 crops of house-number digits from Google Street View (Netzer et
al., 2011). The files hold 73,257 (train), 26,032 (test) and 531,131 (extra)
images. The original label 10 (digit zero) is mapped to 0.
data: float32 array (n, 3, 32, 32), channels first, raw values divided by 255.
target: int64 array (n,) of digits 0-9.
"""


@overload
def load_svhn(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: Literal[False] = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch: ...
@overload
def load_svhn(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: Literal[True],
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Arrays: ...
@overload
def load_svhn(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: bool = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch | Arrays: ...


def load_svhn(
    data_dir: StrPath,
    *,
    subset: str = "train",
    return_X_y: bool = False,
    download: bool = False,
    shuffle: bool = True,
    random_state: Any = 0,
) -> Bunch | Arrays:
    """Load the SVHN cropped-digits dataset from its ``.mat`` files.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Directory holding ``train_32x32.mat``, ``test_32x32.mat`` and/or
        ``extra_32x32.mat`` (MATLAB files with a ``(32, 32, 3, n)`` uint8
        array ``X`` and an ``(n, 1)`` label array ``y``).
    subset : {"train", "test", "extra"}, default="train"
        Which file to load.
    return_X_y : bool, default=False
        If True, return ``(X, y)`` instead of a Bunch.
    download : bool, default=False
        If True and the file of ``subset`` is missing, download it into
        ``data_dir`` (creating it if needed) from :data:`SVHN_MIRRORS`,
        checking its official MD5 checksum.
    shuffle : bool, default=True
        If True, return the rows in a random order drawn with ``random_state``
        (the same order on every call with the same seed). If False, return
        them in the file's order.
    random_state : int, RandomState instance or None, default=0
        Seeds the order when ``shuffle`` is True; ``None`` draws a new order
        on every call.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With attributes ``data`` (float32, C-contiguous, shape
        ``(n, 3, 32, 32)``, values in [0, 1]), ``target`` (int64, shape
        ``(n,)``, label 10 mapped to 0), ``target_names``
        (``np.arange(10)``), ``DESCR`` and ``source`` (the file read).
    (X, y) : tuple of ndarray
        If ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` or the needed file is missing (and ``download`` is
        False), or no mirror could provide it.
    ValueError
        If ``subset`` is unknown or the file is malformed: not a readable
        ``.mat`` file, no ``X`` or ``y`` variable, ``X`` not a
        ``(32, 32, 3, n)`` uint8 array, ``y`` not holding ``n`` labels, or
        labels outside 0..10.

    Examples
    --------
    >>> from skdknn.datasets import load_svhn
    >>> test = load_svhn("~/data/svhn", subset="test")  # doctest: +SKIP
    >>> test.data.shape, test.data.dtype  # doctest: +SKIP
    ((26032, 3, 32, 32), dtype('float32'))
    """
    check_subset(subset, SVHN_SUBSETS, "SVHN")
    name = f"{subset}_32x32.mat"
    root = resolve_data_dir(
        data_dir, download=download, dataset="SVHN", expected=[name]
    )
    remote = Remote("SVHN", SVHN_MIRRORS, SVHN_MD5, _read_mat)
    (path,) = locate_or_fetch(root, [(name,)], remote, download=download, subset=subset)
    images, labels = _read_mat(path)
    images, labels = shuffle_rows(
        images.transpose(3, 2, 0, 1),
        labels,
        shuffle=shuffle,
        random_state=random_state,
    )
    X = to_unit_float(images)
    return make_result(
        X,
        labels,
        return_X_y=return_X_y,
        target_names=np.arange(10),
        descr=_SVHN_DESCR,
        source=str(path),
    )


def _read_mat(path: Path) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Return the checked ``(32, 32, 3, n)`` images and digit labels."""
    mat = _loadmat(path)
    images, raw_labels = mat["X"], mat["y"]
    shape_ok = images.ndim in (3, 4) and images.shape[:3] == _IMAGE_SHAPE
    if images.dtype != np.uint8 or not shape_ok:
        raise ValueError(
            f"{path}: expected 'X' to be a uint8 array of shape (32, 32, 3, n), "
            f"got a {images.dtype} array of shape {images.shape}."
        )
    n_images = images.shape[3] if images.ndim == 4 else 1
    return images.reshape(*_IMAGE_SHAPE, n_images), _labels(raw_labels, n_images, path)


def _loadmat(path: Path) -> dict[str, Any]:
    """Read ``path`` with scipy, turning its assorted errors into ValueError."""
    try:
        mat: dict[str, Any] = scipy.io.loadmat(path, variable_names=("X", "y"))
    except Exception as exc:  # scipy raises many unrelated types on bad input
        raise ValueError(
            f"{path}: could not read it as a MATLAB .mat file ({exc!r}); expected "
            "the SVHN cropped-digits file (format 2)."
        ) from exc
    missing = [key for key in ("X", "y") if key not in mat]
    if missing:
        raise ValueError(
            f"{path}: no variable(s) {', '.join(missing)} in the .mat file; "
            "expected 'X' (32, 32, 3, n) images and 'y' (n, 1) labels."
        )
    return mat


def _labels(raw: NDArray[Any], n_images: int, path: Path) -> NDArray[np.int64]:
    """Check ``raw`` holds ``n_images`` labels in 0..10; map 10 to 0."""
    if raw.size != n_images or raw.dtype.kind not in "iuf":
        raise ValueError(
            f"{path}: 'y' must hold one numeric label per image ({n_images}), "
            f"got a {raw.dtype} array of shape {raw.shape}."
        )
    labels = raw.ravel()
    if labels.size and not np.isfinite(labels).all():
        raise ValueError(
            f"{path}: expected integer labels in 1..10 (10 meaning digit 0; 0 is "
            f"also accepted), found {int(np.sum(~np.isfinite(labels)))} NaN or "
            "infinite values."
        )
    if labels.size and (
        labels.min() < 0
        or labels.max() > _ZERO_LABEL
        or not np.array_equal(labels, np.round(labels))
    ):
        raise ValueError(
            f"{path}: expected integer labels in 1..10 (10 meaning digit 0; "
            "0 is also accepted), "
            f"found values from {labels.min()} to {labels.max()}."
        )
    digits = labels.astype(np.int64)
    digits[digits == _ZERO_LABEL] = 0
    return digits
