"""Save fitted models with their neighbour indexes as memory-mappable files.

``joblib.dump`` / ``pickle`` work on every fitted model of skdknn (the indexes are
embedded in the pickle). :func:`save_model` instead writes each neighbour index to
files of its own, in its engine's native format, beside a small pickle of the rest
of the model; :func:`load_model` maps those files into memory, so that loading a
model with paper-scale indexes (gigabytes) is instant and several processes share
the pages of one index.

Every file's SHA-256 checksum is stored in the manifest and verified on load, so
that a file changed after saving (a disk error, a partial copy, bytes overwritten)
is refused with an error naming it, instead of being searched as NaN rows.

Directory layout::

    model/
        skdknn-model.json     # format, versions, checksums, what each index holds
        model.pkl             # the estimator, indexes left out
        index-0.fit_X.npy     # ExactBackend: the indexed points
        index-0.sq_norms.npy
        index-1.ann           # AnnoyBackend: Annoy's own file
        ...
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from sklearn.utils import assert_all_finite

from ._version import __version__
from ._warnings import warn
from .neighbors import NeighborsBackend

__all__ = ["load_model", "save_model"]

#: Version of the directory layout written by :func:`save_model` (2: checksums).
FORMAT_VERSION = 2
#: Formats :func:`load_model` reads (1: written before checksums, not verifiable).
READABLE_FORMATS = (1, 2)
MANIFEST = "skdknn-model.json"
MODEL_FILE = "model.pkl"
SAFE_MODEL_FILE = "model.skops"
_PID_TAG = "skdknn.neighbors-index"


def _index_description(backend: NeighborsBackend) -> dict[str, Any]:
    """What an index holds: checked against the files when loading."""
    return {
        "backend": type(backend).__name__,
        "metric": getattr(backend, "metric", None),
        "n_features": int(backend.n_features_in_),
        "n_samples": int(backend.n_samples_fit_),
    }


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hexadecimal SHA-256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_checksum(path: Path, expected: str | None) -> None:
    """Refuse a file whose content is not the one saved."""
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise ValueError(
            f"The file {os.fspath(path)!r} is not the file that was saved: its "
            f"SHA-256 checksum is {actual}, the manifest records {expected}. It was "
            "changed or damaged after saving; save the model again. (load_model("
            "..., verify=False) skips this check.)"
        )


class _IndexWriter:
    """Writes every fitted backend's index to files of its own, once each."""

    def __init__(self, directory: Path, *, safe: bool = False) -> None:
        self.directory = directory
        self.safe = safe
        self.indexes: dict[str, dict[str, Any]] = {}
        self._saved: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {}

    def save(self, obj: NeighborsBackend) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """``(name, state without the index, description of the files)``."""
        if id(obj) in self._saved:  # the same backend referenced twice
            return self._saved[id(obj)]
        if self.safe and not obj._index_loads_safely:
            raise ValueError(
                f"{type(obj).__name__} stores its index as a pickle, which loading "
                "would run: it cannot be saved with format='skops'. Use "
                "format='pickle' (and load only files you trust), or another backend."
            )
        name = f"index-{len(self.indexes)}"
        before = set(os.listdir(self.directory))
        state = obj._save_index(self.directory / name)
        files = sorted(set(os.listdir(self.directory)) - before)
        description = _index_description(obj)
        description["files"] = {f: os.path.getsize(self.directory / f) for f in files}
        description["sha256"] = {f: file_sha256(self.directory / f) for f in files}
        self.indexes[name] = description
        self._saved[id(obj)] = name, state, description
        return name, state, description


class _IndexReader:
    """Loads the indexes that :class:`_IndexWriter` wrote, checked, once each."""

    def __init__(
        self, directory: Path, manifest: dict[str, Any], mmap: bool, verify: bool
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.mmap = mmap
        self.verify = verify
        self._loaded: dict[str, NeighborsBackend] = {}

    def load(
        self, name: str, cls: type, state: dict[str, Any], expected: dict[str, Any]
    ) -> NeighborsBackend:
        if name in self._loaded:
            return self._loaded[name]
        if not (isinstance(cls, type) and issubclass(cls, NeighborsBackend)):
            raise TypeError(f"The index {name!r} names {cls!r}, not a backend class.")
        _check_index_files(self.directory, name, expected, self.manifest)
        if self.verify:
            checksums = self.manifest["indexes"][name].get("sha256", {})
            for file in expected["files"]:
                path = _member(self.directory, file, "neighbour index file")
                _verify_checksum(path, checksums.get(file))
        backend = cls.__new__(cls)
        backend.__setstate__(state)
        try:
            backend._load_index(self.directory / name, mmap=self.mmap)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(
                f"Cannot load the neighbour index {name!r} from "
                f"{os.fspath(self.directory)!r}: {exc}"
            ) from exc
        if self.verify and expected["files"]:
            _check_finite_rows(backend, self.directory, name)
        self._loaded[name] = backend
        return backend


class _ModelPickler(pickle.Pickler):
    """Pickles a model, writing every fitted backend's index to files of its own."""

    def __init__(self, file: BinaryIO, writer: _IndexWriter) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer = writer

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, NeighborsBackend) or not hasattr(obj, "n_samples_fit_"):
            return None
        name, state, description = self.writer.save(obj)
        # the class, the state without the index, and what the files must hold
        return (_PID_TAG, name, type(obj), state, description)


class _ModelUnpickler(pickle.Unpickler):
    """Rebuilds the backends of a model saved by :func:`save_model`."""

    def __init__(self, file: BinaryIO, reader: _IndexReader) -> None:
        super().__init__(file)
        self.reader = reader

    def persistent_load(self, pid: Any) -> Any:
        tag, name, cls, state, expected = pid
        if tag != _PID_TAG:
            raise pickle.UnpicklingError(f"Unknown persistent id {tag!r}.")
        return self.reader.load(name, cls, state, expected)


def _import_skops() -> Any:
    """``skops.io``, or an ImportError naming the extra that installs it."""
    try:
        import skops.io
    except ImportError as exc:
        raise ImportError(
            'format="skops" needs the skops package, which is not installed; '
            'install it with `pip install "skdknn[safe]"`.'
        ) from exc
    return skops.io


def _dump_skops(estimator: Any, path: Path, writer: _IndexWriter) -> None:
    """The model in skops' format, indexes in files of their own."""
    sio = _import_skops()
    from ._safe import TAG, dotted_name, encode

    def reference(backend: NeighborsBackend) -> dict[str, Any]:
        name, state, description = writer.save(backend)
        return {
            TAG: "index",
            "name": name,
            "class": dotted_name(type(backend)),
            "state": encoded(state),
            "files": description,
        }

    def encoded(value: Any) -> Any:
        return encode(value, reference)

    sio.dump(encoded(estimator), path)


def _load_skops(path: Path, reader: _IndexReader, trusted: list[str]) -> Any:
    """Load a model written by :func:`_dump_skops`, trusting only ``trusted``."""
    sio = _import_skops()
    from skops.io.exceptions import UntrustedTypesFoundException
    from skorch import NeuralNet

    from ._safe import decode, resolve

    # skorch nets unpickle part of their state in __setstate__: skops must never
    # build one (they are rebuilt from their attributes by decode)
    by_skops = [
        name
        for name in trusted
        if not issubclass(resolve(name, trusted, object), NeuralNet)
    ]
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in by_skops]
    if untrusted:
        raise UntrustedTypesFoundException(untrusted)
    data = sio.load(path, trusted=by_skops)

    def load_index(placeholder: dict[str, Any], state: Any) -> NeighborsBackend:
        cls = resolve(placeholder["class"], trusted, NeighborsBackend)
        if not cls._index_loads_safely or "_index_bytes" in state:
            raise ValueError(
                f"The index {placeholder['name']!r} is stored as a pickle or as "
                f"embedded bytes ({cls.__name__}), which a safe load refuses."
            )
        return reader.load(placeholder["name"], cls, state, placeholder["files"])

    return decode(data, trusted, load_index)


def _check_finite_rows(backend: NeighborsBackend, directory: Path, name: str) -> None:
    """Refuse an index whose rows hold NaN or infinite values (a damaged file)."""
    try:
        rows = backend._indexed_rows()
    except NotImplementedError:
        return
    try:
        assert_all_finite(rows, input_name=name)
    except ValueError as exc:
        raise ValueError(
            f"The neighbour index {name!r} in {os.fspath(directory)!r} holds rows "
            f"that are not finite: {exc} Its files are damaged; save the model again."
        ) from None


def _check_index_files(
    directory: Path, name: str, expected: dict[str, Any], manifest: dict[str, Any]
) -> None:
    """Clear errors for index files of another model, or truncated ones."""
    found = manifest.get("indexes", {}).get(name)
    if found is None:
        raise ValueError(
            f"{MANIFEST} in {os.fspath(directory)!r} does not list the neighbour "
            f"index {name!r} that the model needs."
        )
    for key in ("backend", "metric", "n_features", "n_samples"):
        if found.get(key) != expected[key]:
            raise ValueError(
                f"The neighbour index {name!r} in {os.fspath(directory)!r} was built "
                f"by a {found.get('backend')} on {found.get('n_samples')} points of "
                f"{found.get('n_features')} features with metric "
                f"{found.get('metric')!r}, but the model expects a "
                f"{expected['backend']} on {expected['n_samples']} points of "
                f"{expected['n_features']} features with metric "
                f"{expected['metric']!r} (mismatched {key}): the index files belong "
                "to another model."
            )
    for file, size in expected["files"].items():
        path = _member(directory, file, "neighbour index file")
        if not path.is_file():
            raise FileNotFoundError(
                f"The neighbour index file {os.fspath(path)!r} is missing."
            )
        actual = path.stat().st_size
        if actual != size or found["files"].get(file) != size:
            raise ValueError(
                f"The neighbour index file {os.fspath(path)!r} has {actual} bytes; the "
                f"model expects {size}: the file is truncated or belongs to another "
                "model."
            )


def save_model(
    estimator: Any,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    format: str = "pickle",
) -> Path:
    """Save a fitted model, each neighbour index in files of its own.

    Works on any picklable object holding fitted skdknn backends: a
    :class:`~skdknn.DeepKNNClassifier`, a Pipeline ending with one, or a backend.
    The estimator itself is not modified, except that an Annoy index is remapped
    from the file it is saved to (Annoy reloads what it saves).

    Parameters
    ----------
    estimator : object
        The fitted model.
    directory : str or path-like
        Directory to create. It must not exist or be empty, unless ``overwrite``.
    overwrite : bool, default=False
        Replace a model previously saved in ``directory``. The new model is
        written to a temporary directory beside it and swapped in once complete,
        so that a failure while saving leaves the old model as it was. A
        directory holding any file that is not part of the saved model is
        never deleted (FileExistsError naming those files).
    format : {"pickle", "skops"}, default="pickle"
        How the model (all but its indexes) is stored. ``"pickle"``: ``model.pkl``,
        any picklable model; loading it runs whatever code the file names.
        ``"skops"``: ``model.skops`` in skops' format, which
        ``load_model`` reads without running code from the file, refusing any
        type not trusted (see :func:`load_model`). The network is stored as its
        classes' names and its weights as arrays; its optimizer and training
        history are not stored. ``PyNNDescentBackend`` (whose index is a
        pickle) cannot be saved this way.

    Returns
    -------
    directory : pathlib.Path
        Where the model was saved.

    Raises
    ------
    ValueError
        When ``format`` is not ``"pickle"`` or ``"skops"``, or the model cannot be
        stored in that format (checked before anything is deleted).
    FileExistsError
        When ``directory`` is a file, is not empty and ``overwrite`` is False, or
        holds files that are not part of a saved model.

    See Also
    --------
    load_model : Load it back, memory-mapping the indexes.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from skdknn.neighbors import ExactBackend
    >>> from skdknn.persistence import load_model, save_model
    >>> X = np.arange(12.0).reshape(6, 2)
    >>> backend = ExactBackend(n_neighbors=2).fit(X)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_model(backend, f"{tmp}/model")
    ...     loaded = load_model(path)
    ...     loaded.kneighbors([[0.5, 1.5]], return_distance=False)
    array([[0, 1]])
    """
    directory = Path(directory)
    if format not in ("pickle", "skops"):
        raise ValueError(f'format must be "pickle" or "skops"; got {format!r}.')
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite must be True or False; got {overwrite!r}.")
    replaced = _replaceable(directory, overwrite=bool(overwrite))
    directory.parent.mkdir(parents=True, exist_ok=True)
    # the new model is written beside the directory and swapped in at the end:
    # a failure while saving leaves any model saved there before as it was
    staging = Path(
        tempfile.mkdtemp(
            prefix=f".{directory.name}.", suffix=".part", dir=directory.parent
        )
    )
    try:
        _write_model(estimator, staging, format)
        _swap_in(staging, directory, replaced)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return directory


def _model_files(manifest: dict[str, Any]) -> set[str]:
    """The names of the files that a saved model's manifest lists."""
    names = {MANIFEST, str(manifest.get("model_file", MODEL_FILE))}
    for index in (manifest.get("indexes") or {}).values():
        names.update(index.get("files", {}))
    return names


def _replaceable(directory: Path, *, overwrite: bool) -> bool:
    """Whether ``directory`` holds a model to replace; refuse anything else.

    Returns False when the directory does not exist or is empty. Raises
    FileExistsError when it holds anything but the files of a saved model.
    """
    if not directory.exists():
        return False
    if not directory.is_dir():
        raise FileExistsError(
            f"{os.fspath(directory)!r} is a file, not a directory; save_model needs "
            "a directory to create (or an empty one)."
        )
    present = {path.name for path in directory.iterdir()}
    if not present:
        return False
    if not overwrite:
        raise FileExistsError(
            f"{os.fspath(directory)!r} is not empty; pass overwrite=True to "
            "replace a model saved there."
        )
    if MANIFEST not in present:
        raise FileExistsError(
            f"{os.fspath(directory)!r} holds files that are not a saved skdknn "
            f"model (no {MANIFEST}); refusing to overwrite it."
        )
    manifest = _read_manifest(directory / MANIFEST)
    others = sorted(present - _model_files(manifest))
    if others:
        raise FileExistsError(
            f"{os.fspath(directory)!r} holds files that are not part of the saved "
            f"model: {', '.join(others)}. Refusing to overwrite it (they would be "
            "deleted); move them elsewhere, or save to another directory."
        )
    return True


def _write_model(estimator: Any, directory: Path, format: str) -> None:
    """Write the model file, its indexes and the manifest into ``directory``."""
    writer = _IndexWriter(directory, safe=format == "skops")
    model_file = SAFE_MODEL_FILE if format == "skops" else MODEL_FILE
    if format == "skops":
        _dump_skops(estimator, directory / model_file, writer)
    else:
        with open(directory / model_file, "wb") as file:
            _ModelPickler(file, writer).dump(estimator)
    manifest = {
        "format": FORMAT_VERSION,
        "skdknn_version": __version__,
        "model": type(estimator).__name__,
        "model_file": model_file,
        "indexes": writer.indexes,
    }
    manifest["model_sha256"] = file_sha256(directory / model_file)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _swap_in(staging: Path, directory: Path, replaced: bool) -> None:
    """Rename the new model ``staging`` to ``directory``, deleting the old one last."""
    if not replaced:
        if directory.exists():  # an empty directory
            directory.rmdir()
        staging.rename(directory)
        return
    old = Path(
        tempfile.mkdtemp(
            prefix=f".{directory.name}.", suffix=".old", dir=directory.parent
        )
    )
    old.rmdir()
    directory.rename(old)
    try:
        staging.rename(directory)
    except BaseException:
        old.rename(directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest as a dict, or a ValueError naming the file."""
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{os.fspath(path)!r} is not a valid skdknn model manifest (JSON written "
            f"by save_model): {exc}. The file is damaged; save the model again."
        ) from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"{os.fspath(path)!r} is not a valid skdknn model manifest: it holds a "
            f"JSON {type(manifest).__name__}, not an object."
        )
    return manifest


def _member(directory: Path, name: Any, what: str) -> Path:
    """``directory / name``, refusing a name that is not a plain file name in it."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or Path(name).name != name
        or "\\" in name
    ):
        raise ValueError(
            f"{MANIFEST} in {os.fspath(directory)!r} names the {what} {name!r}, which "
            "is not a file name inside the model directory; the manifest is damaged "
            "or was crafted."
        )
    return directory / name


def load_model(
    directory: str | os.PathLike[str],
    *,
    mmap: bool = True,
    verify: bool = True,
    safe: bool = False,
    trusted: list[Any] | None = None,
) -> Any:
    """Load a model saved by :func:`save_model`.

    Parameters
    ----------
    directory : str or path-like
        The directory given to :func:`save_model`.
    mmap : bool, default=True
        Memory-map the index files (copy-on-write: the files are never modified):
        loading is instant and pages are read when searched. The files must stay
        in place while the model is used. ``False`` reads the indexes into memory
        (Annoy always maps its file; ``False`` reads it all up front).
    verify : bool, default=True
        Check every file against the SHA-256 checksum recorded in the manifest
        when saving, and every index for rows that are not finite, before using
        it. Both read every byte of the files once: ``False`` skips them, for
        very large memory-mapped indexes whose files you trust to be intact (a
        damaged file is then searched as it is).
    safe : bool, default=False
        Refuse a model stored as a pickle (``format="pickle"``), whose loading
        runs whatever code the file names. A model saved with ``format="skops"``
        is always loaded without running code from the file.
    trusted : list of types or str, default=None
        Types that a ``format="skops"`` model may contain besides those trusted by
        default (skdknn's estimators, backends and networks, the torch and skorch
        classes of a default DkNN, torch's own layers): typically the class of
        your own torch module, as a class or its dotted name
        (``"mypackage.nets.MyNet"``). Any other type in the file is refused with
        skops' ``UntrustedTypesFoundException`` naming it, before anything is
        built. A trusted class is imported and its code (e.g. ``forward``) runs
        when you predict: trust the classes whose code you have, never the file.

    Returns
    -------
    estimator : object
        The model, predicting exactly as the one saved.

    Raises
    ------
    ValueError
        When a file's checksum is not the one recorded (the file was changed or
        damaged after saving), an index holds non-finite rows, an index file is
        truncated or belongs to another model (other backend, number of points,
        width or metric), the directory was written by a newer format, the
        manifest is not valid JSON or names a file outside the directory, or the
        model file is not a pickle / skops archive written by :func:`save_model`.
    FileNotFoundError
        When the directory, its manifest or an index file is missing.
    TypeError
        When ``mmap``, ``verify`` or ``safe`` is not a bool (``verify="no"`` is
        true in Python and would verify).
    skops.io.exceptions.UntrustedTypesFoundException
        When a ``format="skops"`` model holds a type that is not trusted.
    """
    for name, flag in (("mmap", mmap), ("verify", verify), ("safe", safe)):
        if not isinstance(flag, (bool, np.bool_)):
            # a string such as "no" or "false" is true: it would do the opposite
            raise TypeError(
                f"load_model's {name} must be True or False; got {flag!r} "
                f"({type(flag).__name__})."
            )
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{os.fspath(directory)!r} holds no saved skdknn model ({MANIFEST} is "
            "missing)."
        )
    manifest = _read_manifest(manifest_path)
    if manifest.get("format") not in READABLE_FORMATS:
        raise ValueError(
            f"{os.fspath(directory)!r} was saved in format {manifest.get('format')!r} "
            f"(by skdknn {manifest.get('skdknn_version')}); this skdknn reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}."
        )
    if verify and manifest["format"] < 2:
        warn(
            f"{os.fspath(directory)!r} was saved before skdknn stored checksums "
            "(format 1): its files cannot be verified. Save the model again.",
            UserWarning,
        )
    model_file = _member(
        directory, manifest.get("model_file", MODEL_FILE), "model file"
    )
    if model_file.name not in (MODEL_FILE, SAFE_MODEL_FILE):
        raise ValueError(
            f"{MANIFEST} in {os.fspath(directory)!r} names an unknown model file "
            f"{model_file.name!r}; expected {MODEL_FILE!r} or {SAFE_MODEL_FILE!r}."
        )
    if not model_file.is_file():
        raise FileNotFoundError(f"The model file {os.fspath(model_file)!r} is missing.")
    if safe and model_file.name != SAFE_MODEL_FILE:
        raise ValueError(
            f"{os.fspath(directory)!r} stores its model as a pickle ({MODEL_FILE}), "
            "which loading would run; safe=True refuses it. Save it with "
            "save_model(..., format='skops') where you trust it."
        )
    if verify:
        _verify_checksum(model_file, manifest.get("model_sha256"))
    reader = _IndexReader(directory, manifest, mmap, verify)
    if model_file.name == SAFE_MODEL_FILE:
        from ._safe import default_trusted, dotted_name

        names = [t if isinstance(t, str) else dotted_name(t) for t in trusted or ()]
        try:
            return _load_skops(model_file, reader, default_trusted() + names)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(
                f"{os.fspath(model_file)!r} is not a model in skops' format (a zip "
                f"archive written by save_model(..., format='skops')): {exc}. The "
                "file is damaged or was replaced; save the model again."
            ) from exc
    with open(model_file, "rb") as file:
        try:
            return _ModelUnpickler(file, reader).load()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(
                f"{os.fspath(model_file)!r} is not a pickle written by save_model: "
                f"{exc}. The file is damaged or was replaced; save the model again."
            ) from exc
