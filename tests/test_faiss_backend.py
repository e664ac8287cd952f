"""FaissBackend: flat search equals exact search, the inverted file's cells, its
fallback to exact search, seeds, threads, persistence and parameter errors.

Recall on real DkNN activations, the shared behaviour of the backends and
scikit-learn's estimator checks are in test_backends.py; the round trips of a
DkNN with faiss indexes in test_persistence.py."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.base import clone

from skdknn import load_model, save_model
from skdknn.neighbors import ExactBackend, FaissBackend, ProjectedBackend

faiss = pytest.importorskip("faiss")


def _data(seed=0, n=600, d=12, n_queries=50):
    """Eight gaussian clusters in d dimensions, and queries from the same mixture."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4, size=(8, d))
    X = centers[rng.integers(0, 8, n)] + rng.normal(size=(n, d))
    Q = centers[rng.integers(0, 8, n_queries)] + rng.normal(size=(n_queries, d))
    return X, Q


def _recall(ours, reference):
    k = reference.shape[1]
    pairs = zip(ours, reference, strict=True)
    return np.mean([np.intersect1d(a, b).size / k for a, b in pairs])


# ---------------------------------------------------------------------------------
# Flat: exact search
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_flat_equals_exact_search(metric):
    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(500, 16)), rng.normal(size=(60, 16))
    ours = FaissBackend(n_neighbors=10, metric=metric).fit(X)
    exact = ExactBackend(n_neighbors=10, metric=metric).fit(X)
    for query in (Q, None):  # new points, and the indexed points (self excluded)
        dist, ind = ours.kneighbors(query)
        ref_dist, ref_ind = exact.kneighbors(query)
        assert ind.dtype == np.intp and dist.dtype == np.float32
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)


def test_flat_distances_of_near_duplicates_are_exact():
    # Far from the origin, faiss's |q|^2 - 2 q.t + |t|^2 loses the distance of a
    # point to itself or to a near-copy to cancellation; those pairs are recomputed.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 64)).astype(np.float32) + 20
    near = X[:100] + rng.normal(scale=1e-3, size=(100, 64)).astype(np.float32)
    backend = FaissBackend(n_neighbors=3).fit(X)
    dist, ind = backend.kneighbors(X[:100])
    np.testing.assert_array_equal(ind[:, 0], np.arange(100))
    np.testing.assert_array_equal(dist[:, 0], 0)
    dist, ind = backend.kneighbors(near)
    np.testing.assert_array_equal(ind[:, 0], np.arange(100))
    true = np.linalg.norm(near - X[:100], axis=1)
    np.testing.assert_allclose(dist[:, 0], true, rtol=1e-3)


# ---------------------------------------------------------------------------------
# Inverted file
# ---------------------------------------------------------------------------------
def test_ivf_default_cells_and_recall():
    X, Q = _data()
    backend = FaissBackend(n_neighbors=20, index="ivf", random_state=0).fit(X)
    # round(sqrt(600)) = 24 cells, at most 600 // 39 = 15: 15 cells, 15 probed
    assert (backend.n_lists_, backend.n_probe_) == (15, 15)
    assert backend._index.nlist == 15 and backend._index.nprobe == 15
    ref = ExactBackend(n_neighbors=20).fit(X).kneighbors(Q)[1]
    np.testing.assert_array_equal(backend.kneighbors(Q)[1], ref)  # every cell
    coarse = clone(backend).set_params(n_lists=15, n_probe=3).fit(X)
    assert _recall(coarse.kneighbors(Q)[1], ref) >= 0.9
    assert FaissBackend().fit(X).n_lists_ is None  # flat


def test_ivf_falls_back_to_exact_search_when_cells_hold_too_few_points():
    X, Q = _data(seed=2)
    backend = FaissBackend(
        n_neighbors=80, index="ivf", n_lists=15, n_probe=1, random_state=0
    ).fit(X)
    # one cell of about 40 points mostly cannot hold 80 neighbours: faiss pads
    # those rows with -1
    _, raw = backend._index.search(backend._prepare(Q), 80)
    assert (raw < 0).any(axis=1).mean() > 0.5
    exact = ExactBackend(n_neighbors=80).fit(X)
    for query in (Q, None):
        dist, ind = backend.kneighbors(query)
        ref_dist, ref_ind = exact.kneighbors(query)
        assert (ind >= 0).all()
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-4, atol=1e-4)


def test_ivf_seed_fixes_the_cells():
    X, Q = _data(seed=3)
    params = dict(n_neighbors=10, index="ivf", n_lists=12, n_probe=2)
    a = FaissBackend(**params, random_state=0).fit(X)
    b = FaissBackend(**params, random_state=0, n_jobs=1).fit(X)
    c = FaissBackend(**params, random_state=1).fit(X)

    def centroids(backend):
        return backend._index.quantizer.reconstruct_n(0, backend.n_lists_)

    np.testing.assert_array_equal(centroids(a), centroids(b))
    assert not np.array_equal(centroids(a), centroids(c))
    np.testing.assert_array_equal(a.kneighbors(Q)[1], b.kneighbors(Q)[1])


def test_n_jobs_sets_threads_only_during_calls():
    from skdknn.neighbors._faiss import omp_threads

    X, Q = _data(seed=4)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)  # a count no call below uses
    try:
        backend = FaissBackend(index="ivf", n_jobs=1, random_state=0).fit(X)
        backend.kneighbors(Q)
        assert faiss.omp_get_max_threads() == 3
        with omp_threads(faiss, 1):
            assert faiss.omp_get_max_threads() == 1  # set during the call
        # restored when the call fails, too
        with pytest.raises(RuntimeError), omp_threads(faiss, 1):
            raise RuntimeError
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(before)


# ---------------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_joblib_and_pickle_round_trips(index, tmp_path):
    X, Q = _data(seed=5)
    backend = FaissBackend(n_neighbors=9, index=index, random_state=0).fit(X)
    expected = backend.kneighbors(Q)
    path = tmp_path / "backend.joblib"
    joblib.dump(backend, path)
    twice = pickle.loads(pickle.dumps(pickle.loads(pickle.dumps(backend))))
    for loaded in (joblib.load(path), joblib.load(path, mmap_mode="r"), twice):
        for got, want in zip(loaded.kneighbors(Q), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(loaded.kneighbors()[1], backend.kneighbors()[1])
    assert pickle.loads(pickle.dumps(FaissBackend(index=index))).index == index


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize(
    "backend",
    [
        FaissBackend(n_neighbors=9),
        FaissBackend(n_neighbors=9, index="ivf", random_state=0),
        ProjectedBackend(
            FaissBackend(index="ivf"), n_components=4, n_neighbors=9, random_state=0
        ),
    ],
    ids=["flat", "ivf", "projected-ivf"],
)
def test_save_model_round_trip(backend, mmap, tmp_path):
    X, Q = _data(seed=6)
    backend = clone(backend).fit(X)
    directory = save_model(backend, tmp_path / "model")
    assert (directory / "index-0.faiss").is_file() or (
        directory / "index-1.faiss"
    ).is_file()
    loaded = load_model(directory, mmap=mmap)
    if mmap and isinstance(backend, FaissBackend) and backend.index == "flat":
        # faiss maps the points of the file instead of reading them
        maps = Path("/proc/self/maps")
        assert not maps.exists() or str(directory / "index-0.faiss") in maps.read_text()
    for got, want in zip(loaded.kneighbors(Q), backend.kneighbors(Q), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.kneighbors()[1], backend.kneighbors()[1])
    # a loaded (possibly memory-mapped) index saves and pickles again in full
    again = load_model(save_model(loaded, tmp_path / "again"))
    restored = pickle.loads(pickle.dumps(loaded))
    for other in (again, restored):
        np.testing.assert_array_equal(other.kneighbors(Q)[1], backend.kneighbors(Q)[1])


def test_load_rejects_an_index_of_another_size(tmp_path):
    X, _ = _data(seed=7)
    backend = FaissBackend(n_neighbors=3).fit(X)
    other = FaissBackend(n_neighbors=3).fit(X[:100])
    faiss.write_index(other._index, str(tmp_path / "index.faiss"))
    clone_ = pickle.loads(pickle.dumps(backend))
    with pytest.raises(ValueError, match="holds 100 points"):
        clone_._load_index(tmp_path / "index", mmap=False)


# ---------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"index": "ivf", "n_lists": 8, "n_probe": 9}, "n_probe=9 exceeds n_lists=8"),
        ({"index": "ivf", "n_lists": 601}, "n_lists=601 exceeds the number"),
        ({"index": "hnsw"}, "'index' parameter of FaissBackend must be a str among"),
        ({"n_probe": 0}, "'n_probe' parameter of FaissBackend must be an int"),
    ],
)
def test_bad_parameters_raise_clear_errors(params, message):
    X, _ = _data()
    backend = FaissBackend(**params)  # no validation in __init__
    with pytest.raises(ValueError, match=message):
        backend.fit(X)


def test_default_cells_cap_n_probe():
    X, _ = _data(n=100)
    backend = FaissBackend(index="ivf", n_probe=50, random_state=0).fit(X)
    assert (backend.n_lists_, backend.n_probe_) == (2, 2)  # 100 // 39 cells


def test_missing_faiss_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes the import fail
    X, _ = _data()
    with pytest.raises(ImportError, match=r"skdknn\[faiss\].*pip install faiss-cpu"):
        FaissBackend().fit(X)
