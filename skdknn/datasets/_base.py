"""Shared helpers for the dataset loaders: paths, subsets, downloads, results."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import numpy as np
from numpy.typing import NDArray
from sklearn.utils import Bunch, check_random_state

StrPath: TypeAlias = str | os.PathLike[str]
Arrays: TypeAlias = tuple[NDArray[np.float32], NDArray[np.int64]]

_CHUNK_SIZE = 1 << 20
_TIMEOUT_SECONDS = 60.0
_USER_AGENT = "skdknn-datasets"


@dataclass(frozen=True)
class Remote:
    """Where and how to download a dataset's files.

    Parameters
    ----------
    dataset : str
        Human-readable dataset name used in messages.
    mirrors : sequence of str
        Base URLs tried in order; a file's URL is ``mirror + "/" + name``.
    md5 : mapping of str to str
        Official MD5 checksums by file name. A file without an entry is
        validated with ``validate`` instead.
    validate : callable
        Called with the path of a downloaded temporary file; raises
        ``ValueError`` if the file cannot be parsed.
    """

    dataset: str
    mirrors: Sequence[str]
    md5: Mapping[str, str]
    validate: Callable[[Path], object]


def check_subset(subset: str, valid: Sequence[str], dataset: str) -> None:
    """Raise ``ValueError`` unless ``subset`` is one of ``valid``."""
    if subset not in valid:
        options = ", ".join(repr(v) for v in valid)
        raise ValueError(
            f"Unknown {dataset} subset {subset!r}; valid subsets are {options}."
        )


def resolve_data_dir(
    data_dir: StrPath, *, download: bool, dataset: str, expected: Sequence[str]
) -> Path:
    """Return ``data_dir`` as a Path, creating it only when downloading."""
    root = Path(data_dir).expanduser()
    if root.is_dir():
        return root
    names = ", ".join(expected)
    if root.exists():
        raise FileNotFoundError(
            f"{dataset} data_dir '{root}' is not a directory; expected a "
            f"directory containing {names}."
        )
    if download:
        root.mkdir(parents=True, exist_ok=True)
        return root
    raise FileNotFoundError(
        f"{dataset} data_dir '{root}' does not exist; expected a directory "
        f"containing {names}. Pass download=True to create it and fetch the files."
    )


def locate_or_fetch(
    root: Path,
    wanted: Sequence[tuple[str, ...]],
    remote: Remote,
    *,
    download: bool,
    subset: str,
) -> list[Path]:
    """Return one existing path per entry of ``wanted``, downloading if allowed.

    Each entry of ``wanted`` lists acceptable file names in order of
    preference; the last one is the name downloaded from the mirrors.
    """
    found = [_first_existing(root, names) for names in wanted]
    missing = [names for names, path in zip(wanted, found, strict=True) if path is None]
    if missing and not download:
        raise FileNotFoundError(_missing_message(root, wanted, missing, remote, subset))
    return [
        path if path is not None else fetch(names[-1], root, remote)
        for names, path in zip(wanted, found, strict=True)
    ]


def fetch(name: str, root: Path, remote: Remote) -> Path:
    """Download ``name`` into ``root`` from the first mirror that works.

    The file is written to a temporary file in ``root``, verified, and only
    then renamed to its final name, so a failure never leaves a partial file.
    """
    dest = root / name
    failures = []
    for mirror in remote.mirrors:
        url = f"{mirror.rstrip('/')}/{name}"
        try:
            _download(url, dest, remote.md5.get(name), remote.validate)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            failures.append(f"{url} ({exc})")
        else:
            return dest
    tried = "; ".join(failures) or "no mirrors are configured"
    raise FileNotFoundError(
        f"Could not download {remote.dataset} file {name!r} into '{root}'. "
        f"Tried: {tried}. Download it manually and place it in that directory."
    )


def shuffle_rows(
    images: NDArray[Any], labels: NDArray[Any], *, shuffle: bool, random_state: Any
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Return ``images`` and ``labels`` in one seeded random order.

    Files often store their rows grouped by class (the embedded MNIST sample is
    500 zeros, then 500 ones, ...), so the first rows of an unshuffled array are
    not a sample of the whole: ``fit(X[:4000])`` would never see two classes.
    With ``shuffle=False`` the arrays are returned as they are (no copy).
    ``shuffle`` must be a bool (a string such as ``"no"`` is truthy: refused).
    """
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False; got {shuffle!r}.")
    if not shuffle:
        return images, labels
    order = check_random_state(random_state).permutation(len(labels))
    return images[order], labels[order]


def to_unit_float(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """Return a new C-contiguous float32 copy of ``images`` scaled to [0, 1]."""
    scaled = np.asarray(images).astype(np.float32, order="C")
    scaled /= 255
    return scaled


def make_result(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    *,
    return_X_y: bool,
    target_names: NDArray[Any],
    descr: str,
    source: str,
) -> Bunch | Arrays:
    """Return ``(X, y)`` or a :class:`~sklearn.utils.Bunch` of the dataset."""
    if return_X_y:
        return X, y
    return Bunch(
        data=X, target=y, target_names=target_names, DESCR=descr, source=source
    )


def _first_existing(root: Path, names: Sequence[str]) -> Path | None:
    """Return the first of ``root / name`` that is an existing file."""
    for name in names:
        path = root / name
        if path.is_file():
            return path
    return None


def _missing_message(
    root: Path,
    wanted: Sequence[tuple[str, ...]],
    missing: Sequence[tuple[str, ...]],
    remote: Remote,
    subset: str,
) -> str:
    """Build the error message for files missing from ``root``."""

    def alternatives(names: tuple[str, ...]) -> str:
        return " or ".join(names)

    absent = ", ".join(alternatives(names) for names in missing)
    expected = "; ".join(alternatives(names) for names in wanted)
    mirrors = ", ".join(remote.mirrors)
    return (
        f"{remote.dataset} file(s) missing from '{root}' for subset={subset!r}: "
        f"{absent}. Expected files: {expected}. Put them there, or pass "
        f"download=True to fetch the missing ones from: {mirrors}."
    )


def _download(
    url: str, dest: Path, md5: str | None, validate: Callable[[Path], object]
) -> None:
    """Download ``url`` to ``dest`` via a verified temporary file."""
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=".part", dir=dest.parent
    )
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out)
        _verify(tmp, digest, md5, validate)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stream(url: str, out: IO[bytes]) -> str:
    """Copy the body of ``url`` into ``out``; return its MD5 hex digest."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
        while chunk := response.read(_CHUNK_SIZE):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _verify(
    path: Path, digest: str, md5: str | None, validate: Callable[[Path], object]
) -> None:
    """Check the official checksum if known, otherwise that the file parses."""
    if md5 is None:
        validate(path)
    elif digest != md5.lower():
        raise ValueError(
            f"MD5 checksum mismatch: got {digest}, expected the official {md5}"
        )
