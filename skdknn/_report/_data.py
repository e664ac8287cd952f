"""The report's data: a train / test split of MNIST or Fashion-MNIST, OOD inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import train_test_split

from ..datasets import load_fashion_mnist, load_mnist, make_ood_images
from ._config import DATASETS, ReportConfig

__all__ = ["OOD_KINDS", "Data", "load_data", "ood_kinds", "ood_sets"]

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


def ood_kinds(data: Data) -> dict[str, str]:
    """The kinds of inputs of no class for ``data``, with their titles: noise,
    pixel-shuffled test images, photograph patches, and for a model of clothes
    (not digits) the embedded MNIST digits."""
    kinds = [kind for kind in OOD_KINDS if kind != "digits"]
    if data.items != "digits":
        kinds.append("digits")
    return {kind: OOD_KINDS[kind].format(items=data.items) for kind in kinds}


def ood_sets(data: Data, size: int, seed: int) -> dict[str, NDArray[np.float32]]:
    """``size`` inputs of each kind of :func:`ood_kinds` (seeded)."""
    sets = {}
    for i, kind in enumerate(ood_kinds(data)):
        if kind == "digits":
            X, _ = load_mnist(return_X_y=True, shuffle=True, random_state=seed)
            sets[kind] = X[:size]
        else:
            sets[kind] = make_ood_images(
                data.X_test, size, kind=kind, random_state=seed + i
            ).astype(np.float32)
    return sets
