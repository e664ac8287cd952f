"""Reader for the IDX binary format used by MNIST and Fashion-MNIST.

An IDX file starts with a four-byte magic number ``0x00 0x00 <type> <ndim>``,
followed by ``ndim`` big-endian unsigned 32-bit dimension sizes and then the
data in C order, stored big-endian.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._base import StrPath

__all__ = ["IDX_DTYPES", "load_idx"]

_GZIP_MAGIC = b"\x1f\x8b"
_MAGIC_SIZE = 4

#: IDX type code -> big-endian numpy dtype of the stored values.
IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def load_idx(path: StrPath) -> NDArray[Any]:
    """Read one IDX file, plain or gzip-compressed, into a numpy array.

    Compression is detected from the gzip magic bytes, so the file name does
    not need to end in ``.gz``.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file to read.

    Returns
    -------
    array : ndarray
        A new, writable, native-byte-order array whose shape comes from the
        header dimensions and whose dtype comes from the header type code:
        ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32,
        ``0x0D`` float32, ``0x0E`` float64.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the gzip stream is corrupt, the magic number is not a valid IDX
        magic number, or the data size does not match the header dimensions
        (for example a truncated file).

    Examples
    --------
    A one-dimensional uint8 file holding the three labels 7, 2 and 1:

    >>> import gzip, pathlib, tempfile
    >>> from skdknn.datasets import load_idx
    >>> header = bytes([0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00, 0x03])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = pathlib.Path(tmp) / "labels-idx1-ubyte.gz"
    ...     _ = path.write_bytes(gzip.compress(header + bytes([7, 2, 1])))
    ...     labels = load_idx(path)
    >>> labels
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    raw = _read_bytes(path)
    dtype, shape, offset = _parse_header(raw, path)
    _check_data_size(raw, dtype, shape, offset, path)
    native = dtype.newbyteorder("=")
    count = math.prod(shape)
    if count == 0:
        return np.empty(shape, dtype=native)
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return data.reshape(shape).astype(native)


def _read_bytes(path: Path) -> bytes:
    """Return the file's bytes, decompressed if they start with gzip magic."""
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; load_idx reads one IDX file (e.g. "
            "train-images-idx3-ubyte or its .gz). To load a directory of MNIST "
            "files, use load_mnist(data_dir)."
        )
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(
            f"{path}: the file starts with gzip magic bytes but its gzip data "
            f"is corrupt or truncated ({exc}); expected a complete .gz file."
        ) from exc


def _parse_header(raw: bytes, path: Path) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """Return ``(dtype, shape, data_offset)`` from the IDX header of ``raw``."""
    if len(raw) < _MAGIC_SIZE:
        raise ValueError(
            f"{path}: file has only {len(raw)} bytes; an IDX file starts with "
            "a 4-byte magic number 0x00 0x00 <type code> <ndim>."
        )
    code, ndim = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(
            f"{path}: bad IDX magic number 0x{raw[:_MAGIC_SIZE].hex().upper()}; "
            f"expected 0x0000TTDD with type code TT one of {codes} and DD the "
            "number of dimensions. Is this really an IDX file?"
        )
    offset = _MAGIC_SIZE + 4 * ndim
    if len(raw) < offset:
        raise ValueError(
            f"{path}: truncated IDX header; the magic number declares {ndim} "
            f"dimensions ({offset} header bytes) but the file has {len(raw)} bytes."
        )
    shape = struct.unpack(f">{ndim}I", raw[_MAGIC_SIZE:offset])
    return IDX_DTYPES[code], shape, offset


def _check_data_size(
    raw: bytes, dtype: np.dtype[Any], shape: tuple[int, ...], offset: int, path: Path
) -> None:
    """Raise if the data after the header does not match the header dims."""
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - offset
    if actual != expected:
        kind = "is truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"{path}: IDX header declares shape {shape} of {dtype.name} "
            f"({expected} data bytes) but the file holds {actual} data bytes "
            f"after its {offset}-byte header; the file {kind} or is corrupt."
        )
