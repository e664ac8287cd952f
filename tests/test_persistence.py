"""Persistence of fitted models with every backend: joblib / pickle round trips,
save_model / load_model with memory-mapped index files, and clear errors."""

from __future__ import annotations

import json
import pickle
import shutil

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification

from skdknn import DeepKNNClassifier, load_model, save_model
from skdknn.neighbors import (
    AnnoyBackend,
    ExactBackend,
    FaissBackend,
    LSHBackend,
    ProjectedBackend,
    PyNNDescentBackend,
)
from skdknn.persistence import MANIFEST, file_sha256

BACKENDS = {
    "exact": ExactBackend(),
    "annoy": AnnoyBackend(n_trees=10, random_state=0),
    "faiss": FaissBackend(),
    "faiss-ivf": FaissBackend(index="ivf", random_state=0),
    "pynndescent": PyNNDescentBackend(random_state=0),
    "lsh": LSHBackend(random_state=0),
    "projected": ProjectedBackend("annoy", n_components=8, random_state=0),
}

#: Files written by save_model for each backend's first index.
INDEX_FILES = {
    "exact": {"index-0.fit_X.npy", "index-0.sq_norms.npy"},
    "annoy": {"index-0.ann"},
    "faiss": {"index-0.faiss"},
    "faiss-ivf": {"index-0.faiss"},
    "pynndescent": {"index-0.joblib"},
    "lsh": {f"index-0.{a.lstrip('_')}.npy" for a in LSHBackend._index_arrays},
    "projected": {"index-1.ann"},  # index-0: the projection, pickled in model.pkl
}


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=360, n_features=20, n_informative=8, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def fitted(request, data):
    X, y = data
    clf = DeepKNNClassifier(
        n_neighbors=7,
        calibration_size=40,
        max_epochs=3,
        batch_size=64,
        random_state=0,
        backend=BACKENDS[request.param],
    ).fit(X[:300], y[:300])
    return request.param, clf


def _same_outputs(a, b, X):
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    np.testing.assert_array_equal(a.p_values(X), b.p_values(X))
    (d1, i1), (d2, i2) = a.kneighbors(X), b.kneighbors(X)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


def test_joblib_round_trip(fitted, data, tmp_path):
    name, clf = fitted
    X, _ = data
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    _same_outputs(clf, joblib.load(path), X[300:])
    # memory-mapped joblib load (read-only arrays) too
    _same_outputs(clf, joblib.load(path, mmap_mode="r"), X[300:])


def test_pickle_round_trip_twice(fitted, data):
    # pickling a restored model works as well (Annoy: bytes of a reloaded index)
    name, clf = fitted
    X, _ = data
    once = pickle.loads(pickle.dumps(clf))
    twice = pickle.loads(pickle.dumps(once))
    _same_outputs(clf, twice, X[300:])


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip(fitted, data, tmp_path, mmap):
    name, clf = fitted
    X, _ = data
    directory = save_model(clf, tmp_path / "model")
    files = {p.name for p in directory.iterdir()}
    assert {MANIFEST, "model.pkl"} <= files
    assert INDEX_FILES[name] <= files
    manifest = json.loads((directory / MANIFEST).read_text())
    # one index per layer (relu1, relu2, logits), plus the inner ones if projected
    n_indexes = 6 if name == "projected" else 3
    assert len(manifest["indexes"]) == n_indexes
    loaded = load_model(directory, mmap=mmap)
    _same_outputs(clf, loaded, X[300:])
    if name == "exact":
        fit_X = loaded.backends_[0]._fit_X
        assert isinstance(fit_X, np.memmap) == mmap
    # the saved model survives a second save (Annoy remapped to the first files)
    again = save_model(loaded, tmp_path / "again")
    _same_outputs(clf, load_model(again), X[300:])


def test_save_model_of_a_bare_backend(tmp_path):
    X = np.random.default_rng(0).normal(size=(50, 6))
    backend = AnnoyBackend(n_neighbors=3, n_trees=5, random_state=0).fit(X)
    loaded = load_model(save_model(backend, tmp_path / "annoy"))
    np.testing.assert_array_equal(backend.kneighbors(X)[1], loaded.kneighbors(X)[1])


# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_models(data):
    """Models differing only by their metric, with Annoy and Exact backends."""
    X, y = data
    params = dict(n_neighbors=7, calibration_size=40, max_epochs=3, random_state=0)
    return {
        (backend, metric): DeepKNNClassifier(
            backend=backend, metric=metric, **params
        ).fit(X[:300], y[:300])
        for backend in ("exact", "annoy")
        for metric in ("euclidean", "cosine")
    }


@pytest.mark.parametrize("backend", ["exact", "annoy"])
def test_truncated_index_file(two_models, tmp_path, backend):
    directory = save_model(two_models[backend, "euclidean"], tmp_path / "m")
    name = "index-1.ann" if backend == "annoy" else "index-1.fit_X.npy"
    path = directory / name
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{name}.*truncated"):
        load_model(directory)


@pytest.mark.parametrize("backend", ["exact", "annoy"])
def test_index_file_of_another_width(two_models, tmp_path, backend):
    # layer 0 (relu1) swapped with layer 2 (3 logits): wrong dimension
    directory = save_model(two_models[backend, "euclidean"], tmp_path / "m")
    suffix = ".ann" if backend == "annoy" else ".fit_X.npy"
    shutil.copy(directory / f"index-2{suffix}", directory / f"index-0{suffix}")
    with pytest.raises(ValueError, match=f"index-0{suffix}"):
        load_model(directory)


@pytest.mark.parametrize("backend", ["exact", "annoy"])
def test_index_files_of_another_metric(two_models, tmp_path, backend):
    # the same model fitted with the cosine metric: same sizes, other metric
    euclidean = save_model(two_models[backend, "euclidean"], tmp_path / "euclidean")
    cosine = save_model(two_models[backend, "cosine"], tmp_path / "cosine")
    for path in cosine.iterdir():
        if path.name.startswith("index-") or path.name == MANIFEST:
            shutil.copy(path, euclidean / path.name)
    # the manifest's checksum of model.pkl already refuses the copy; without the
    # checksums, the description of each index still does
    with pytest.raises(ValueError, match=r"model.pkl.*not the file that was saved"):
        load_model(euclidean)
    with pytest.raises(ValueError, match=r"metric 'cosine'.*mismatched metric"):
        load_model(euclidean, verify=False)


def test_index_files_of_another_model(two_models, data, tmp_path):
    X, y = data
    small = DeepKNNClassifier(
        n_neighbors=7, calibration_size=40, max_epochs=1, random_state=0
    ).fit(X[:200], y[:200])
    target = save_model(two_models["exact", "euclidean"], tmp_path / "big")
    other = save_model(small, tmp_path / "small")
    shutil.copy(other / MANIFEST, target / MANIFEST)
    with pytest.raises(ValueError, match="mismatched n_samples"):
        load_model(target, verify=False)


def test_missing_files(two_models, tmp_path):
    directory = save_model(two_models["annoy", "euclidean"], tmp_path / "m")
    (directory / "index-2.ann").unlink()
    with pytest.raises(FileNotFoundError, match="index-2.ann"):
        load_model(directory)
    with pytest.raises(FileNotFoundError, match="no saved skdknn model"):
        load_model(tmp_path / "nowhere")


def test_newer_format_refused(two_models, tmp_path):
    directory = save_model(two_models["exact", "euclidean"], tmp_path / "m")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["format"] = 99
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="format 99"):
        load_model(directory)


def test_overwrite_rules(two_models, tmp_path):
    clf = two_models["exact", "euclidean"]
    directory = save_model(clf, tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(clf, directory)
    save_model(clf, directory, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved skdknn model"):
        save_model(clf, other, overwrite=True)
    assert (other / "notes.txt").exists()


def _small_backend_model(tmp_path):
    """A saved bare ExactBackend, its directory and its answers."""
    X = np.arange(24.0).reshape(12, 2)
    backend = ExactBackend(n_neighbors=3).fit(X)
    directory = save_model(backend, tmp_path / "m")
    return directory, X, backend.kneighbors(X)


def _assert_intact(directory, X, expected):
    """The model saved in ``directory`` loads and answers as saved; no staging left."""
    distances, indices = load_model(directory).kneighbors(X)
    np.testing.assert_array_equal(indices, expected[1])
    np.testing.assert_array_equal(distances, expected[0])
    assert sorted(p.name for p in directory.parent.iterdir()) == [directory.name]


def test_overwrite_with_a_bad_format_keeps_the_old_model(tmp_path):
    directory, X, expected = _small_backend_model(tmp_path)
    with pytest.raises(ValueError, match='"pickle" or "skops"'):
        save_model(ExactBackend().fit(X), directory, overwrite=True, format="skopz")
    _assert_intact(directory, X, expected)


@pytest.mark.parametrize("case", ["unpicklable", "skops_refuses_the_backend"])
def test_failed_overwrite_keeps_the_old_model(tmp_path, case):
    # the new model is written beside the directory and swapped in at the end
    directory, X, expected = _small_backend_model(tmp_path)
    if case == "unpicklable":
        with pytest.raises((pickle.PicklingError, AttributeError)):
            save_model(lambda: 0, directory, overwrite=True)
    else:
        # as PyNNDescentBackend (whose index is a pickle), without its JIT cost;
        # the refusal comes once the model file is partly written
        class PickledIndexBackend(ExactBackend):
            _index_loads_safely = False

        backends = [ExactBackend(n_neighbors=3).fit(X), PickledIndexBackend().fit(X)]
        with pytest.raises(ValueError, match="cannot be saved with format='skops'"):
            save_model(backends, directory, overwrite=True, format="skops")
    _assert_intact(directory, X, expected)
    # and it can still be overwritten
    save_model(ExactBackend(n_neighbors=2).fit(X[:5]), directory, overwrite=True)
    assert load_model(directory).n_samples_fit_ == 5


def test_overwrite_never_deletes_files_not_part_of_the_model(tmp_path):
    directory, X, expected = _small_backend_model(tmp_path)
    (directory / "my_notes.txt").write_text("precious")
    (directory / "plots").mkdir()
    with pytest.raises(FileExistsError, match=r"not part of the saved model.*my_notes"):
        save_model(ExactBackend().fit(X), directory, overwrite=True)
    assert (directory / "my_notes.txt").read_text() == "precious"
    assert (directory / "plots").is_dir()
    (directory / "my_notes.txt").unlink()
    (directory / "plots").rmdir()
    _assert_intact(directory, X, expected)


def test_save_model_into_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="is a file, not a directory"):
            save_model(
                ExactBackend().fit(np.eye(3)), tmp_path / "afile", overwrite=overwrite
            )
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("value", ["../other/model.pkl", "/tmp/model.pkl", ".."])
def test_manifest_naming_a_file_outside_the_directory_is_refused(tmp_path, value):
    directory, X, _ = _small_backend_model(tmp_path)
    save_model(ExactBackend(n_neighbors=3).fit(X), tmp_path / "other")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["model_file"] = value
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a file name inside the model directory"):
        load_model(directory, verify=False)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_damaged_manifest_is_named(tmp_path, content):
    directory, X, _ = _small_backend_model(tmp_path)
    (directory / MANIFEST).write_text(content, errors="surrogateescape")
    with pytest.raises(ValueError, match=rf"{MANIFEST}.*not a valid skdknn model"):
        load_model(directory)
    # overwrite refuses it too, naming it, and keeps it
    with pytest.raises(ValueError, match=rf"{MANIFEST}.*not a valid skdknn model"):
        save_model(ExactBackend().fit(X), directory, overwrite=True)
    assert (directory / "model.pkl").is_file()


def test_damaged_model_pickle_is_named(tmp_path):
    directory, X, _ = _small_backend_model(tmp_path)
    (directory / "model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(
        ValueError, match=r"model.pkl.*not a pickle written by save_model"
    ):
        load_model(directory, verify=False)


# ---------------------------------------------------------------------------------
# Checksums: the data loaded is exactly the data saved
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exact_and_faiss(data):
    X, y = data
    params = dict(n_neighbors=7, calibration_size=40, max_epochs=2, random_state=0)
    return {
        name: DeepKNNClassifier(backend=backend, **params).fit(X[:300], y[:300])
        for name, backend in (("exact", "exact"), ("faiss", FaissBackend()))
    }


def _overwrite_second_half(path):
    """Same size, second half of the bytes set to 0xff (float32 NaN)."""
    content = path.read_bytes()
    half = len(content) // 2
    path.write_bytes(content[:half] + b"\xff" * (len(content) - half))


@pytest.mark.parametrize(
    ("name", "file"), [("exact", "index-0.fit_X.npy"), ("faiss", "index-0.faiss")]
)
def test_index_file_overwritten_in_place_is_refused(
    exact_and_faiss, data, tmp_path, name, file
):
    # before the fix this loaded and predicted without error (rows read as NaN)
    directory = save_model(exact_and_faiss[name], tmp_path / "m")
    _overwrite_second_half(directory / file)
    with pytest.raises(ValueError, match=rf"{file}.*not the file that was saved"):
        load_model(directory)
    # the documented opt-out loads it as it is (no byte read up front)
    loaded = load_model(directory, verify=False)
    assert loaded.backends_[0].n_samples_fit_ == 260


@pytest.mark.parametrize("name", ["exact", "faiss"])
def test_non_finite_index_rows_are_refused_at_load(exact_and_faiss, tmp_path, name):
    # a file damaged before its checksum was taken (or with a checksum made to
    # match): the rows themselves are checked
    directory = save_model(exact_and_faiss[name], tmp_path / "m")
    file = "index-2.fit_X.npy" if name == "exact" else "index-2.faiss"
    _overwrite_second_half(directory / file)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["indexes"]["index-2"]["sha256"][file] = file_sha256(directory / file)
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"index-2.*not finite"):
        load_model(directory)


def test_model_file_changed_is_refused_before_unpickling(exact_and_faiss, tmp_path):
    directory = save_model(exact_and_faiss["exact"], tmp_path / "m")
    content = bytearray((directory / "model.pkl").read_bytes())
    content[len(content) // 2] ^= 0xFF
    (directory / "model.pkl").write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"model.pkl.*not the file that was saved"):
        load_model(directory)


def test_format_1_without_checksums_loads_with_a_warning(
    exact_and_faiss, data, tmp_path
):
    clf = exact_and_faiss["exact"]
    directory = save_model(clf, tmp_path / "m")
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["format"] = 1
    del manifest["model_sha256"]
    for index in manifest["indexes"].values():
        del index["sha256"]
    (directory / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="cannot be verified"):
        loaded = load_model(directory)
    X, _ = data
    _same_outputs(clf, loaded, X[300:])


@pytest.mark.parametrize("name", ["mmap", "verify", "safe"])
@pytest.mark.parametrize("value", ["no", "false", 0, None])
def test_load_model_flags_must_be_bools(tmp_path, name, value):
    # verify="no" is true in Python: it was accepted and did the opposite of
    # what it says (safe=0 likewise loaded a pickle without refusal)
    save_model(ExactBackend(n_neighbors=2).fit(np.eye(4)), tmp_path / "m")
    with pytest.raises(TypeError, match=f"{name} must be True or False; got"):
        load_model(tmp_path / "m", **{name: value})
    # numpy's bools are bools (safe=True would refuse this pickled model)
    flag = np.False_ if name == "safe" else np.True_
    assert load_model(tmp_path / "m", **{name: flag}).n_samples_fit_ == 4
