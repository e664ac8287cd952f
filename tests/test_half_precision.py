"""``ExactBackend(storage_dtype="float16")``: half the memory, float32 distances."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from _helpers import tiny
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdknn.neighbors import ExactBackend, ProjectedBackend
from skdknn.persistence import load_model, save_model


def _relu_data(n=600, d=300, n_queries=80, seed=0):
    """Non-negative, half-zero rows, like hidden activations."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)
    Q = np.maximum(rng.normal(size=(n_queries, d)), 0).astype(np.float32)
    return X, Q


def _overlap(a, b):
    """Mean share of each row's neighbour set that the other also returns."""
    return np.mean([len(set(r) & set(s)) / len(r) for r, s in zip(a, b, strict=True)])


def test_float16_storage_halves_the_index_memory():
    X, _ = _relu_data()
    full = ExactBackend(storage_dtype="float32").fit(X)
    half = ExactBackend(storage_dtype="float16").fit(X)
    assert half._fit_X.dtype == np.float16
    assert half._fit_X.nbytes * 2 == full._fit_X.nbytes == X.nbytes
    # the classifier's streamed fit allocates the index in float16 too
    rng = np.random.default_rng(0)
    Xt = rng.normal(size=(200, 6)).astype(np.float32)
    yt = (Xt[:, 0] > np.median(Xt[:, 0])).astype(int)
    clf = tiny(max_epochs=2, backend=ExactBackend(storage_dtype="float16"))
    clf.fit(Xt, yt)
    for backend in clf.backends_:
        assert backend._fit_X.dtype == np.float16
        assert backend._fit_X.nbytes == 2 * backend._fit_X.size


@pytest.mark.parametrize("working_memory", [None, 0.05])
def test_float16_answer_is_exact_for_the_stored_rows(working_memory):
    # the search upcasts tiles of stored rows to float32: its answer is that of a
    # float64 brute force over the float16-rounded rows, for any tile size
    X, Q = _relu_data()
    backend = ExactBackend(
        n_neighbors=10, storage_dtype="float16", working_memory=working_memory
    ).fit(X)
    if working_memory is not None:  # several tiles of rows per query block
        assert backend._tile_rows(*X.shape) < X.shape[0]
    rounded = X.astype(np.float16).astype(np.float64)
    ref_dist, ref_ind = NearestNeighbors(n_neighbors=10).fit(rounded).kneighbors(Q)
    dist, ind = backend.kneighbors(Q)
    assert dist.dtype == np.float32
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)
    # self queries: every stored row is at distance 0 from itself
    _, self_ind = backend.kneighbors(n_neighbors=5)
    _, ref_self = NearestNeighbors(n_neighbors=5).fit(rounded).kneighbors()
    assert _overlap(self_ind, ref_self) > 0.999


def test_float16_neighbours_agree_with_float32():
    # stated tolerance: rounding to 11 significant bits moves distances by about
    # 1e-4 relative; neighbour sets agree on at least 99 % of their members
    X, Q = _relu_data()
    d32, i32 = ExactBackend(n_neighbors=20).fit(X).kneighbors(Q)
    half = ExactBackend(n_neighbors=20, storage_dtype="float16").fit(X)
    d16, i16 = half.kneighbors(Q)
    assert _overlap(i32, i16) >= 0.99
    np.testing.assert_allclose(d16, d32, rtol=1e-3)


def test_dknn_predictions_agree_with_float32():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    score = X[:, 0] + 0.5 * X[:, 1]
    y = (score > np.median(score)).astype(int)
    Xq = rng.normal(size=(200, 6)).astype(np.float32)
    full = tiny().fit(X, y)
    half = tiny(backend=ExactBackend(storage_dtype="float16")).fit(X, y)
    r32 = full.predict_with_credibility(Xq)
    r16 = half.predict_with_credibility(Xq)
    assert np.mean(r32.prediction == r16.prediction) >= 0.98
    assert np.abs(r32.credibility - r16.credibility).mean() <= 0.01


@pytest.mark.parametrize("bad", ["int8", "float64", "half", np.int32])
def test_bad_storage_dtype_is_refused_at_fit(bad):
    X, _ = _relu_data(n=20, d=4)
    backend = ExactBackend(storage_dtype=bad)  # __init__ only stores it
    with pytest.raises(InvalidParameterError, match="'storage_dtype' parameter"):
        backend.fit(X)


def test_values_beyond_float16_range_are_refused():
    X, _ = _relu_data(n=20, d=4)
    X[3, 2] = 1e6
    message = (
        r"ExactBackend\(storage_dtype='float16'\) cannot store rows holding a "
        r"magnitude of 1e\+06: float16's largest value is 65504\. Use "
        r"storage_dtype='float32', or scale the rows \(e\.g\. metric='cosine', or a "
        r"projection\) first\.$"
    )
    with pytest.raises(ValueError, match=message):
        ExactBackend(storage_dtype="float16").fit(X)
    # in float32 they are fine
    ExactBackend(storage_dtype="float32").fit(X)
    # float16's largest value itself is stored exactly, negative too
    X[3, 2] = -65504.0
    half = ExactBackend(storage_dtype="float16").fit(X)
    assert half._fit_X[3, 2] == -65504.0


def test_float16_index_inside_a_projection():
    X, Q = _relu_data()
    inner = ExactBackend(storage_dtype="float16")
    projected = ProjectedBackend(inner, n_components=32, random_state=0).fit(X)
    assert projected.backend_._fit_X.dtype == np.float16
    reference = ProjectedBackend(n_components=32, random_state=0).fit(X)
    ind16 = projected.kneighbors(Q, 10, return_distance=False)
    ind32 = reference.kneighbors(Q, 10, return_distance=False)
    assert _overlap(ind16, ind32) >= 0.99


@pytest.mark.parametrize("mmap", [True, False])
def test_float16_index_saves_and_loads(tmp_path, mmap):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    clf = tiny(max_epochs=2, backend=ExactBackend(storage_dtype="float16")).fit(X, y)
    directory = save_model(clf, tmp_path / "model")
    loaded = load_model(directory, mmap=mmap, verify=True)
    for before, after in zip(clf.backends_, loaded.backends_, strict=True):
        assert after._fit_X.dtype == np.float16
        np.testing.assert_array_equal(after._fit_X, before._fit_X)
    with sklearn.config_context(working_memory=0.01):
        np.testing.assert_array_equal(
            loaded.predict_with_credibility(X).p_values,
            clf.predict_with_credibility(X).p_values,
        )


@parametrize_with_checks([ExactBackend(storage_dtype="float16")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("working_memory", [0.0001, 0.01, 0.05])
def test_float16_tiles_use_a_quarter_of_the_budget(monkeypatch, working_memory):
    """The stored rows are converted to float32 a tile at a time: as many rows
    as a quarter of ``working_memory`` holds (at least one), no more and no
    fewer (a wrong tile size gives the same answer, only the memory differs)."""
    import skdknn.neighbors._exact as exact

    rng = np.random.default_rng(0)
    n, d = 700, 40
    X = rng.normal(size=(n, d)).astype(np.float32)
    tiles = []
    real = exact._expanded_scores

    def spy(query, rows, sq_norms, out):
        tiles.append(rows.shape[0])  # before any padding of a one-row tile
        assert rows.dtype == torch.float32
        return real(query, rows, sq_norms, out)

    backend = ExactBackend(3, storage_dtype="float16", working_memory=working_memory)
    backend.fit(X)
    monkeypatch.setattr(exact, "_expanded_scores", spy)
    backend.kneighbors(X[:5])
    budget = working_memory * 2**20
    # 16 rows at 0.01 MiB, 81 at 0.05; at 0.0001 MiB not one row fits: one
    expected = max(1, int(budget / 4 // (4 * d)))
    assert tiles[0] == min(n, expected)
    # every pass over the index (one per block of queries) covers all n rows
    assert max(tiles) == tiles[0] and sum(tiles) % n == 0
