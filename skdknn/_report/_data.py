"""The report's data: a train / test split of MNIST or Fashion-MNIST, OOD inputs."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from ..datasets import load_fashion_mnist, load_idx, load_mnist, make_ood_images
from ._config import DATASETS, ReportConfig

__all__ = [
    "MIN_OOD_IMAGES",
    "OOD_DIR_FILES",
    "OOD_KINDS",
    "Data",
    "OODImages",
    "images_key",
    "load_data",
    "load_ood_dir",
    "ood_inputs",
    "ood_kinds",
]

#: Kinds of out-of-distribution inputs, with their titles in the report
#: (``{items}``: what the dataset's images show, :attr:`Data.items`).
OOD_KINDS = {
    "noise": "uniform noise",
    "shuffled": "pixel-shuffled {items}",
    "patches": "patches of photographs",
    # for a Fashion-MNIST model: the embedded MNIST sample (the thesis, Fig. 4.6,
    # showed Fashion-MNIST to its MNIST model)
    "digits": "MNIST digits (embedded sample)",
}


def images_key(X: NDArray) -> str:
    """Short hash of an array (its shape, dtype and values): images an
    adversarial set is made from, or the data a model is trained on
    (:meth:`Data.key`); what is cached is reused only for the very same values."""
    digest = hashlib.sha256(repr((X.shape, X.dtype.str)).encode())
    digest.update(np.ascontiguousarray(X).data)
    return digest.hexdigest()[:12]


@dataclass
class Data:
    """Training and held-out test images, (n, 1, 28, 28) float32 in [0, 1]."""

    name: str
    X_train: NDArray[np.float32]
    y_train: NDArray[np.int64]
    X_test: NDArray[np.float32]
    y_test: NDArray[np.int64]
    #: what the images show, in the page's sentences ("digits", "clothing images")
    items: str = "digits"
    #: names of the labels 0, 1, ... when they are not the digits themselves
    class_names: tuple[str, ...] | None = None

    def label(self, y: object) -> str:
        """A label as the page names it: ``3``, or ``4 (Coat)``."""
        if self.class_names is None:
            return str(y)
        return f"{y} ({self.class_names[int(str(y))]})"

    def key(self) -> str:
        """Short hash of the training and test images and labels: the saved model
        (and so everything derived from it) is reused only for the very same data,
        whatever ``--data-dir`` is called or where it is given from."""
        parts = (self.X_train, self.y_train, self.X_test, self.y_test)
        return images_key(np.array([images_key(part) for part in parts]))

    def describe(self, calibration_size: int) -> str:
        n_indexed = len(self.X_train) - calibration_size
        return (
            f"{self.name}: {len(self.X_train):,} training images ({n_indexed:,} "
            f"indexed, {calibration_size:,} calibration), {len(self.X_test):,} "
            "held-out test images"
        )


def _subsample(
    X: NDArray, y: NDArray, size: int | None, seed: int
) -> tuple[NDArray, NDArray]:
    if size is None or size >= len(y):
        return X, y
    X_sub, _, y_sub, _ = train_test_split(
        X, y, train_size=size, stratify=y, random_state=seed
    )
    return X_sub, y_sub


def load_data(config: ReportConfig) -> Data:
    """The split the report trains and evaluates on.

    The embedded sample is split (stratified) into ``test_size`` test images and
    the rest for training; IDX files give their own train and test sets, of which
    ``train_size`` / ``test_size`` images are drawn (stratified).
    """
    if config.dataset not in DATASETS:
        raise ValueError(
            f"Unknown dataset {config.dataset!r}; expected one of {list(DATASETS)}."
        )
    seed = config.random_state
    if config.dataset == "embedded":
        if config.data_dir is not None:
            raise ValueError(
                "--data-dir needs --dataset mnist or fashion-mnist (the embedded "
                "sample ships with skdknn)."
            )
        # the split below is stratified, so the stored order (sorted by digit) is
        # safe here; keeping it keeps the split, and the numbers, of earlier reports
        X, y = load_mnist(return_X_y=True, shuffle=False)
        if config.test_size >= len(y):
            raise ValueError(
                f"test_size={config.test_size} leaves no training images in the "
                f"{len(y):,}-image embedded sample."
            )
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=config.test_size, stratify=y, random_state=seed
        )
        X_train, y_train = _subsample(X_train, y_train, config.train_size, seed)
        return Data("MNIST (embedded sample)", X_train, y_train, X_test, y_test)
    if config.data_dir is None:
        raise ValueError(f"--dataset {config.dataset} needs --data-dir.")
    loader = load_mnist if config.dataset == "mnist" else load_fashion_mnist
    # files' order, as in earlier reports; _subsample draws stratified subsets
    train = loader(config.data_dir, subset="train", shuffle=False)
    test = loader(config.data_dir, subset="test", shuffle=False)
    X_train, y_train, X_test, y_test = train.data, train.target, test.data, test.target
    X_train, y_train = _subsample(X_train, y_train, config.train_size, seed)
    X_test, y_test = _subsample(X_test, y_test, config.test_size, seed)
    if config.dataset == "mnist":
        return Data("MNIST", X_train, y_train, X_test, y_test)
    return Data(
        "Fashion-MNIST",
        X_train,
        y_train,
        X_test,
        y_test,
        items="clothing images",
        class_names=tuple(str(name) for name in train.target_names),
    )


#: The images file ``--ood-dir`` reads: the first of these names found in the
#: directory (each plain or gzipped, ``.gz``), test images before training ones.
OOD_DIR_FILES = ("t10k-images-idx3-ubyte", "train-images-idx3-ubyte")


#: Fewer images of ``--ood-dir`` than this are warned about: the AUROC and the
#: shares of the ood section mean little on so few.
MIN_OOD_IMAGES = 20


@dataclass
class OODImages:
    """Inputs of no class read from an IDX images file (``--ood-dir``)."""

    #: every image of the file, (n, channels, height, width) float32 in [0, 1]
    X: NDArray[np.float32]
    #: the file read
    path: Path

    @property
    def title(self) -> str:
        """How the report's tables and legends name the set (the page and the
        JSON also give the file's whole path)."""
        return f"{self.path.parent.name}/{self.path.name} (--ood-dir)"


def load_ood_dir(directory: str, image_shape: tuple[int, ...]) -> OODImages:
    """The images of the first file of :data:`OOD_DIR_FILES` in ``directory``
    (read with :func:`skdknn.datasets.load_idx`), scaled to [0, 1].

    Raises
    ------
    FileNotFoundError
        When ``directory`` is missing or holds none of the files (the message
        lists the names looked for).
    ValueError
        When the file is malformed, holds no images, or its images are not of
        ``image_shape`` (``(channels, height, width)``, the training images':
        the message gives both shapes) or not uint8 (the message gives the
        dtype found).

    Warns
    -----
    UserWarning
        When the file holds fewer than :data:`MIN_OOD_IMAGES` images (the
        message gives the count): AUROCs and shares of so few mean little.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        found = "a file, not a directory" if root.exists() else "no such directory"
        raise FileNotFoundError(
            f"--ood-dir {directory}: {found}; expected a directory "
            "holding an IDX images file such as Fashion-MNIST's "
            "t10k-images-idx3-ubyte.gz."
        )
    names = [f"{stem}{suffix}" for stem in OOD_DIR_FILES for suffix in ("", ".gz")]
    path = next((root / name for name in names if (root / name).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"--ood-dir {directory}: no images file found; looked for "
            f"{', '.join(names)}."
        )
    images = load_idx(path)
    if images.ndim == 3:  # (n, height, width): one channel
        images = images[:, None]
    if images.shape[1:] != tuple(image_shape):
        raise ValueError(
            f"{path}: images of shape {images.shape[1:]} ({images.dtype}), but "
            f"the report's training images have shape {tuple(image_shape)}; "
            "--ood-dir needs uint8 images (an idx3-ubyte file) of the training "
            "images' shape."
        )
    if images.dtype != np.uint8:
        raise ValueError(
            f"{path}: images of dtype {images.dtype}, but --ood-dir needs uint8 "
            "images (an idx3-ubyte file, pixels 0-255) like the training images'."
        )
    if len(images) == 0:
        raise ValueError(
            f"{path}: the file holds no images (its header gives 0); --ood-dir "
            "needs a file of images."
        )
    if len(images) < MIN_OOD_IMAGES:
        warnings.warn(
            f"--ood-dir {path} holds only {len(images)} image(s): the AUROC and "
            f"the shares of the inputs of no class are measured on them alone "
            f"(at least {MIN_OOD_IMAGES} are needed for them to mean much).",
            UserWarning,
            stacklevel=2,
        )
    return OODImages((images / 255.0).astype(np.float32), path)


def ood_kinds(data: Data) -> dict[str, str]:
    """The kinds of inputs of no class for ``data``, with their titles: noise,
    pixel-shuffled test images, photograph patches, and for a model of clothes
    (not digits) the embedded MNIST digits."""
    kinds = [kind for kind in OOD_KINDS if kind != "digits"]
    if data.items != "digits":
        kinds.append("digits")
    return {kind: OOD_KINDS[kind].format(items=data.items) for kind in kinds}


def ood_inputs(
    data: Data, size: int, seed: int, ood: OODImages | None = None
) -> dict[str, tuple[str, NDArray[np.float32]]]:
    """The inputs of no class, by kind: their title and ``size`` images (seeded).

    ``ood`` given: ``size`` images drawn from it (kind ``"idx"``); else each kind
    of :func:`ood_kinds`.
    """
    if ood is not None:
        rows = check_random_state(seed).permutation(len(ood.X))[:size]
        return {"idx": (ood.title, ood.X[np.sort(rows)])}
    sets = {}
    for i, (kind, title) in enumerate(ood_kinds(data).items()):
        if kind == "digits":
            X, _ = load_mnist(return_X_y=True, shuffle=True, random_state=seed)
            sets[kind] = (title, X[:size])
        else:
            images = make_ood_images(
                data.X_test, size, kind=kind, random_state=seed + i
            )
            sets[kind] = (title, images.astype(np.float32))
    return sets
