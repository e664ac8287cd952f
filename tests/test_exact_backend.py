"""Tests of ``skdknn.neighbors.ExactBackend`` against scikit-learn's brute force."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import sklearn
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.exceptions import NotFittedError
from sklearn.neighbors import KNeighborsTransformer, NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdknn.neighbors import ExactBackend

RTOL = 1e-4  # float32 search vs float64 reference


def _data(seed=0, n=120, d=6, n_queries=37):
    """Continuous data: distances are almost surely distinct (no ties)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n_queries, d))


# ---------------------------------------------------------------------------------
# Same answers as NearestNeighbors(algorithm="brute")
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 5, 120])
def test_euclidean_queries_match_sklearn(k):
    X, Q = _data()
    dist, ind = ExactBackend(n_neighbors=k).fit(X).kneighbors(Q)
    ref_dist, ref_ind = (
        NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X).kneighbors(Q)
    )
    assert dist.shape == ind.shape == (Q.shape[0], k)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, rtol=RTOL)


@pytest.mark.parametrize("k", [1, 5, 119])
def test_euclidean_self_query_matches_sklearn(k):
    X, _ = _data()
    dist, ind = ExactBackend(n_neighbors=k).fit(X).kneighbors()
    ref_dist, ref_ind = (
        NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X).kneighbors()
    )
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, rtol=RTOL)
    assert not (ind == np.arange(X.shape[0])[:, None]).any()


def test_cosine_matches_sklearn():
    # The backend's cosine distances are euclidean distances between L2-normalised
    # rows: sqrt(2 - 2 cos) = sqrt(2 * d_cos), with d_cos = 1 - cos as sklearn returns
    # them. The ranking is the same.
    X, Q = _data(seed=1)
    backend = ExactBackend(n_neighbors=6, metric="cosine").fit(X)
    ref = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(X)
    for dist, ind, (ref_dist, ref_ind) in [
        (*backend.kneighbors(Q), ref.kneighbors(Q)),
        (*backend.kneighbors(), ref.kneighbors()),
    ]:
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, np.sqrt(2 * ref_dist), rtol=RTOL)


def test_cosine_is_scale_invariant():
    X, Q = _data(seed=2)
    scales = np.random.default_rng(3).uniform(0.1, 50, size=(X.shape[0], 1))
    a = ExactBackend(n_neighbors=4, metric="cosine").fit(X).kneighbors(Q)
    b = ExactBackend(n_neighbors=4, metric="cosine").fit(X * scales).kneighbors(Q * 7)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=RTOL)


def test_self_exclusion_with_duplicate_rows():
    # Small integers: every product is exact in float32, so distances are exact and
    # comparable with sklearn even though ties abound; indices among tied points are
    # arbitrary, so distances are compared. Each point has 4 copies, so with k = 5
    # a point is often not among its own k + 1 = 6 results.
    rng = np.random.default_rng(4)
    base = rng.integers(0, 4, size=(15, 3)).astype(np.float64)
    X = np.repeat(base, 4, axis=0)[rng.permutation(60)]
    for k in (1, 3, 5):
        dist, ind = ExactBackend(n_neighbors=k).fit(X).kneighbors()
        ref_dist, _ = (
            NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X).kneighbors()
        )
        np.testing.assert_allclose(dist, ref_dist, rtol=0, atol=1e-6)
        # the returned distances are those of the returned indices, self excluded
        true = np.linalg.norm(X[ind] - X[:, None, :], axis=2)
        np.testing.assert_allclose(dist, true, rtol=0, atol=1e-6)
        assert not (ind == np.arange(60)[:, None]).any()
        # no index repeated within a row
        assert all(len(set(row)) == k for row in ind)


def test_distance_to_an_identical_point_is_zero():
    # A query equal to an indexed row is at distance 0 from it; float32 arithmetic
    # on the difference q - t gives exactly 0. (sqrt of the expansion
    # |q|^2 - 2 q.t + |t|^2 in float32 leaves sqrt(eps_32 * |q|^2) ~ 3e-4 |q| of
    # cancellation error, which this test would catch.) Scale-10 data: |q| ~ 25.
    X, _ = _data(seed=5, n=200, d=6)
    X = 10 * X
    dist, ind = ExactBackend(n_neighbors=1).fit(X).kneighbors(X)
    np.testing.assert_array_equal(ind.ravel(), np.arange(200))
    np.testing.assert_allclose(dist, 0.0, rtol=0, atol=1e-5 * np.abs(X).max())


# ---------------------------------------------------------------------------------
# Blocking
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_blocking_does_not_change_results(metric):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(256, 5))
    Q = rng.normal(size=(103, 5))  # 103 = 10 * 10 + 3: the last block is short
    row_mb = 4 * 256 / 2**20  # one block row of distances in megabytes
    default = ExactBackend(n_neighbors=7, metric=metric).fit(X)
    one_row = ExactBackend(n_neighbors=7, metric=metric, working_memory=1e-9).fit(X)
    ten_rows = ExactBackend(n_neighbors=7, metric=metric, working_memory=10 * row_mb)
    ten_rows.fit(X)
    assert one_row._block_rows(256) == 1
    assert ten_rows._block_rows(256) == 10
    assert default._block_rows(256) >= 103
    for query in (Q, None):
        d0, i0 = default.kneighbors(query)
        for other in (one_row, ten_rows):
            d1, i1 = other.kneighbors(query)
            np.testing.assert_array_equal(i1, i0)
            # BLAS uses other kernels for a 1-row and a many-row product, so the
            # float32 distances can differ in the last bits, not more.
            np.testing.assert_allclose(d1, d0, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------
# Cosine with all-zero rows (dead ReLU)
# ---------------------------------------------------------------------------------
def test_cosine_zero_rows_no_nan():
    # Contract: cosine = euclidean on L2-normalised rows, all-zero rows stay zero.
    # So a zero row is at distance 1 from every non-zero row and 0 from zero rows.
    rng = np.random.default_rng(7)
    X = np.abs(rng.normal(size=(30, 4)))
    X[[3, 11, 20]] = 0.0
    Q = np.abs(rng.normal(size=(5, 4)))
    Q[[0, 4]] = 0.0
    backend = ExactBackend(n_neighbors=5, metric="cosine").fit(X)
    with np.errstate(all="raise"):
        dist, ind = backend.kneighbors(Q)
        self_dist, self_ind = backend.kneighbors()
        graph = backend.transform(Q)
    assert np.isfinite(dist).all()
    assert np.isfinite(self_dist).all()
    assert np.isfinite(graph.data).all()
    # reference: normalise in float64, zero rows kept at zero
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Xn = X / np.where(norms == 0, 1, norms)
    qn = np.linalg.norm(Q, axis=1, keepdims=True)
    Qn = Q / np.where(qn == 0, 1, qn)
    full = np.linalg.norm(Qn[:, None, :] - Xn[None, :, :], axis=2)
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], rtol=RTOL, atol=1e-6)
    # zero queries: the three zero rows at distance 0, then distance 1
    for i in (0, 4):
        assert set(ind[i, :3]) == {3, 11, 20}
        np.testing.assert_allclose(dist[i], [0, 0, 0, 1, 1], atol=1e-6)
    # zero training rows find the two other zero rows first
    for row in (3, 11, 20):
        assert set(self_ind[row, :2]) == {3, 11, 20} - {row}
        np.testing.assert_allclose(self_dist[row, :2], 0, atol=1e-6)


# ---------------------------------------------------------------------------------
# Transformer API vs KNeighborsTransformer
# ---------------------------------------------------------------------------------
def _same_graph(graph, ref):
    assert graph.shape == ref.shape
    # same neighbours in each row
    for r in range(graph.shape[0]):
        cols = graph.indices[graph.indptr[r] : graph.indptr[r + 1]]
        ref_cols = ref.indices[ref.indptr[r] : ref.indptr[r + 1]]
        assert sorted(cols) == sorted(ref_cols), f"row {r}"
    np.testing.assert_allclose(graph.toarray(), ref.toarray(), rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("mode", ["distance", "connectivity"])
def test_transform_matches_kneighbors_transformer(mode):
    X, Q = _data(seed=8)
    backend = ExactBackend(n_neighbors=4, mode=mode).fit(X)
    ref = KNeighborsTransformer(n_neighbors=4, mode=mode, algorithm="brute").fit(X)
    graph = backend.transform(Q)
    # distance mode keeps k + 1 neighbours per row, connectivity mode k
    assert graph.nnz == Q.shape[0] * (5 if mode == "distance" else 4)
    _same_graph(graph, ref.transform(Q))


@pytest.mark.parametrize("mode", ["distance", "connectivity"])
def test_fit_transform_matches_kneighbors_transformer(mode):
    # The graph of the training points themselves: each row holds the point itself
    # (at distance 0) plus its neighbours.
    X, _ = _data(seed=9)
    graph = ExactBackend(n_neighbors=4, mode=mode).fit_transform(X)
    ref = KNeighborsTransformer(
        n_neighbors=4, mode=mode, algorithm="brute"
    ).fit_transform(X)
    _same_graph(graph, ref)
    np.testing.assert_allclose(
        graph.toarray(),
        ExactBackend(n_neighbors=4, mode=mode).fit(X).transform(X).toarray(),
    )


@pytest.mark.parametrize("mode", ["distance", "connectivity"])
def test_kneighbors_graph_matches_sklearn(mode):
    X, Q = _data(seed=10)
    backend = ExactBackend(n_neighbors=3).fit(X)
    ref = NearestNeighbors(n_neighbors=3, algorithm="brute").fit(X)
    _same_graph(
        backend.kneighbors_graph(Q, mode=mode), ref.kneighbors_graph(Q, mode=mode)
    )
    # X=None: self excluded, as in sklearn
    _same_graph(
        backend.kneighbors_graph(None, n_neighbors=6, mode=mode),
        ref.kneighbors_graph(None, n_neighbors=6, mode=mode),
    )


def test_kneighbors_graph_bad_mode():
    X, _ = _data()
    with pytest.raises(ValueError, match="mode"):
        ExactBackend().fit(X).kneighbors_graph(X, mode="weights")


# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------
def test_n_neighbors_larger_than_n_samples_fit():
    X = np.random.default_rng(0).normal(size=(5, 3))
    backend = ExactBackend(n_neighbors=2).fit(X)
    msg = "Expected n_neighbors <= n_samples_fit"
    with pytest.raises(ValueError, match=msg):
        backend.kneighbors(X, n_neighbors=6)
    # X=None excludes each point: at most n - 1 = 4 neighbours
    with pytest.raises(ValueError, match=msg):
        backend.kneighbors(n_neighbors=5)
    assert backend.kneighbors(n_neighbors=4)[1].shape == (5, 4)
    assert backend.kneighbors(X, n_neighbors=5)[1].shape == (5, 5)
    # distance-mode transform needs n_neighbors + 1 <= n
    with pytest.raises(ValueError, match=msg):
        ExactBackend(n_neighbors=5).fit(X).transform(X)
    with pytest.raises(
        ValueError, match=r"n_neighbors = 6, n_samples_fit = 5: only 5 indexed points"
    ):
        backend.kneighbors(X, n_neighbors=6)
    with pytest.raises(ValueError, match=r"only 4 indexed points .*X=None each point"):
        backend.kneighbors(n_neighbors=5)


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_bad_n_neighbors_argument(k):
    X = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match="n_neighbors"):
        ExactBackend(n_neighbors=2).fit(X).kneighbors(X, n_neighbors=k)


def test_wrong_number_of_features_at_query():
    X = np.random.default_rng(0).normal(size=(10, 4))
    backend = ExactBackend(n_neighbors=2).fit(X)
    with pytest.raises(ValueError, match="3 features"):
        backend.kneighbors(X[:, :3])
    with pytest.raises(ValueError, match="features"):
        backend.transform(np.ones((2, 5)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input(bad):
    X = np.random.default_rng(0).normal(size=(10, 4))
    Xbad = X.copy()
    Xbad[2, 1] = bad
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        ExactBackend(n_neighbors=2).fit(Xbad)
    backend = ExactBackend(n_neighbors=2).fit(X)
    with pytest.raises(ValueError, match=r"NaN|infinity"):
        backend.kneighbors(Xbad)


def test_unfitted_raises_not_fitted():
    X = np.ones((3, 2))
    with pytest.raises(NotFittedError):
        ExactBackend().kneighbors(X)
    with pytest.raises(NotFittedError):
        ExactBackend().kneighbors()
    with pytest.raises(NotFittedError):
        ExactBackend().transform(X)


@pytest.mark.parametrize(
    "params",
    [
        {"metric": "manhattan"},
        {"metric": "Euclidean"},
        {"mode": "weights"},
        {"n_neighbors": 0},
        {"working_memory": 0},
    ],
)
def test_bad_parameters_raise_at_fit(params):
    X = np.random.default_rng(0).normal(size=(10, 4))
    backend = ExactBackend(**params)  # no validation in __init__
    with pytest.raises(ValueError, match=next(iter(params))):
        backend.fit(X)


# ---------------------------------------------------------------------------------
# Ownership of the data
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_inputs_not_modified(dtype, metric):
    X, Q = _data(seed=11)
    X, Q = X.astype(dtype), Q.astype(dtype)
    X0, Q0 = X.copy(), Q.copy()
    backend = ExactBackend(n_neighbors=3, metric=metric).fit(X)
    backend.kneighbors(Q)
    backend.kneighbors()
    backend.transform(Q)
    backend.fit_transform(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Q, Q0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_index_owns_a_copy_of_the_data(dtype, metric):
    # Overwriting the user's array after fit must not change the fitted index.
    X, Q = _data(seed=12)
    X = X.astype(dtype)
    backend = ExactBackend(n_neighbors=3, metric=metric).fit(X)
    d0, i0 = backend.kneighbors(Q)
    X[:] = np.random.default_rng(13).normal(size=X.shape)
    d1, i1 = backend.kneighbors(Q)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)


@pytest.fixture
def torch_warn_always():
    """torch emits some warnings (e.g. on non-writable numpy arrays) only once per
    process; make them always visible so each test sees them regardless of order."""
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(previous)


def _read_only(kind, arr, tmp_path):
    if kind == "setflags":
        arr = arr.copy()
        arr.setflags(write=False)
        return arr
    path = tmp_path / f"{arr.dtype}-{arr.shape[0]}.dat"
    mm = np.memmap(path, dtype=arr.dtype, mode="w+", shape=arr.shape)
    mm[:] = arr
    mm.flush()
    del mm
    return np.memmap(path, dtype=arr.dtype, mode="r", shape=arr.shape)


@pytest.mark.parametrize("read_only", ["fit", "query"])
@pytest.mark.parametrize("kind", ["setflags", "memmap"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_only_inputs_without_warnings(
    read_only, kind, dtype, tmp_path, torch_warn_always
):
    X, Q = _data(seed=14)
    X, Q = X.astype(dtype), Q.astype(dtype)
    if read_only == "fit":
        X = _read_only(kind, X, tmp_path)
        assert not X.flags.writeable
    else:
        Q = _read_only(kind, Q, tmp_path)
        assert not Q.flags.writeable
    nn = NearestNeighbors(n_neighbors=3, algorithm="brute").fit(X)
    ref_dist, ref_ind = nn.kneighbors(Q)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = ExactBackend(n_neighbors=3).fit(X)
        dist, ind = backend.kneighbors(Q)
        backend.kneighbors()
        backend.transform(Q)
    np.testing.assert_array_equal(ind, ref_ind)
    np.testing.assert_allclose(dist, ref_dist, rtol=RTOL)


# ---------------------------------------------------------------------------------
# Property: the k-th distance is the k-th smallest distance
# ---------------------------------------------------------------------------------
@st.composite
def _points(draw):
    n = draw(st.integers(5, 40))
    d = draw(st.integers(1, 6))
    elements = st.floats(-10, 10, width=32, allow_subnormal=False)
    X = draw(hnp.arrays(np.float32, (n, d), elements=elements))
    Q = draw(hnp.arrays(np.float32, (draw(st.integers(1, 4)), d), elements=elements))
    k = draw(st.integers(1, n))
    return X, Q, k


@settings(max_examples=100, deadline=None)
@given(_points())
# Found by hypothesis (shrunk): five copies of 4.125 and a query at 4.183513; the
# distance 0.0585132 is returned as 0.0584960 (relative error 2.9e-4).
@example(
    (
        np.full((5, 1), 4.125, dtype=np.float32),
        np.array([[4.183513]], dtype=np.float32),
        1,
    )
)
# Found by hypothesis in CI: a point tied in float32 with four copies of a point
# 6.1e-5 away lost its own distance-0 slot to them (k = 1).
@example(
    (
        np.array([[1.000061], [1.0], [1.0], [1.0], [1.0]], dtype=np.float32),
        np.array([[0.0]], dtype=np.float32),
        1,
    )
)
def test_kth_distance_is_kth_smallest(points):
    # Reference in float64 on the same float32 values (no input rounding), so the
    # only error is the backend's arithmetic: a float32 result of a correctly
    # rounded distance is within ~1e-7 relative; 1e-4 allows generous slack. The
    # atol only absorbs float32 subnormal-level noise around an exact 0.
    # Queries include the indexed points themselves (distance 0 to themselves).
    X, Q, k = points
    queries = np.vstack([Q, X])
    dist, ind = ExactBackend(n_neighbors=k).fit(X).kneighbors(queries)
    X64, q64 = X.astype(np.float64), queries.astype(np.float64)
    full = np.sqrt(((q64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=2))
    expected = np.sort(full, axis=1)
    np.testing.assert_allclose(dist[:, k - 1], expected[:, k - 1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(dist, expected[:, :k], rtol=1e-4, atol=1e-6)
    # sorted, and the distances are those of the indices returned
    assert (np.diff(dist, axis=1) >= 0).all()
    np.testing.assert_allclose(
        dist, np.take_along_axis(full, ind, axis=1), rtol=1e-4, atol=1e-6
    )


# ---------------------------------------------------------------------------------
# scikit-learn estimator checks
# ---------------------------------------------------------------------------------
@parametrize_with_checks([ExactBackend()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_fit_copies_but_the_classifier_hands_over_its_rows():
    """``fit`` indexes a copy (the caller's array may change later); the
    classifier's private path indexes its fresh activation rows as they are."""
    rows = np.random.default_rng(0).random((50, 8), dtype=np.float32)
    public = ExactBackend(n_neighbors=3).fit(rows)
    assert not np.shares_memory(public._fit_X, rows)
    owned = ExactBackend(n_neighbors=3)._fit_rows(rows, copy=False)
    assert owned._fit_X is rows
    np.testing.assert_array_equal(
        owned.kneighbors(rows[:5])[1], public.kneighbors(rows[:5])[1]
    )


# ---------------------------------------------------------------------------------
# Near-duplicate clusters: the expansion's cancellation error, refined exactly
# ---------------------------------------------------------------------------------
def _check_kth_distances(X, queries, k):
    """The k distances returned are the k smallest, in float64 on the same values,
    sorted, and are the distances of the indices returned."""
    dist, ind = ExactBackend(n_neighbors=k).fit(X).kneighbors(queries)
    X64, q64 = X.astype(np.float64), queries.astype(np.float64)
    full = np.sqrt(((q64[:, None, :] - X64[None, :, :]) ** 2).sum(axis=2))
    expected = np.sort(full, axis=1)[:, :k]
    np.testing.assert_allclose(dist, expected, rtol=1e-4, atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all()
    np.testing.assert_allclose(
        dist, np.take_along_axis(full, ind, axis=1), rtol=1e-4, atol=1e-6
    )


@st.composite
def _near_duplicate_clusters(draw):
    """A few centres far from 0 (large norms: the expansion's error is large) and
    points on each a tiny distance apart, so that many pairs are closer than the
    float32 error of |q|^2 - 2 q.t + |t|^2 and several rows tie in float32."""
    d = draw(st.integers(1, 4))
    n_centres = draw(st.integers(1, 3))
    centre = st.floats(-10, 10, width=32, allow_subnormal=False)
    centres = draw(hnp.arrays(np.float32, (n_centres, d), elements=centre))
    n = draw(st.integers(3, 30))
    which = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_centres - 1)))
    scale = draw(st.sampled_from([0.0, 1e-5, 1e-3, 1e-2, 0.1]))
    offset = st.floats(-1, 1, width=32, allow_subnormal=False)
    offsets = draw(hnp.arrays(np.float32, (n, d), elements=offset))
    X = (centres[which] + scale * offsets).astype(np.float32)
    extra = draw(hnp.arrays(np.float32, (draw(st.integers(0, 3)), d), elements=offset))
    queries = np.vstack([X, (centres[0] + scale * extra).astype(np.float32)])
    return X, queries, draw(st.integers(1, n))


@settings(max_examples=150, deadline=None)
@given(_near_duplicate_clusters())
# From the issue (mutation testing): three near-duplicate pairs in 1-D, k = 3; a
# refinement that compares with the first instead of the k-th selected score, or
# re-sorts the distances but not the indices, returns the wrong neighbours.
@example(
    (
        np.array(
            [[8.69087], [7.790757], [8.68187], [8.68097], [7.799757], [7.789857]],
            dtype=np.float32,
        ),
        np.array(
            [[8.69087], [7.790757], [8.68187], [8.68097], [7.799757], [7.789857]],
            dtype=np.float32,
        ),
        3,
    )
)
def test_kth_distance_is_kth_smallest_in_near_duplicate_clusters(problem):
    _check_kth_distances(*problem)


def test_pinned_near_duplicates_return_the_exact_neighbours():
    X = np.array(
        [[8.69087], [7.790757], [8.68187], [8.68097], [7.799757], [7.789857]],
        dtype=np.float32,
    )
    dist, ind = ExactBackend(n_neighbors=3).fit(X).kneighbors(X)
    X64 = X.astype(np.float64)
    full = np.abs(X64 - X64.T)
    np.testing.assert_array_equal(ind, np.argsort(full, axis=1, kind="stable")[:, :3])
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :3], rtol=1e-4, atol=0)
    np.testing.assert_array_equal(dist[:, 0], 0.0)  # each point is its own nearest


# ---------------------------------------------------------------------------------
# Threads and the memory budget during a search
# ---------------------------------------------------------------------------------
@pytest.fixture
def topk_calls(monkeypatch):
    """(torch threads, rows) of every torch.topk call the search makes."""
    calls = []
    real = torch.topk

    def spy(block, *args, **kwargs):
        calls.append((torch.get_num_threads(), block.shape[0]))
        return real(block, *args, **kwargs)

    monkeypatch.setattr(torch, "topk", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # a count no search below asks for
    yield calls
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("n_jobs", "threads"), [(None, 3), (1, 1), (2, 2), (-1, os.cpu_count())]
)
def test_n_jobs_sets_torch_threads_only_during_the_search(topk_calls, n_jobs, threads):
    X, Q = _data()
    backend = ExactBackend(n_neighbors=4, n_jobs=n_jobs).fit(X)
    backend.kneighbors(Q)
    backend.kneighbors()
    assert {t for t, _ in topk_calls} == {threads}
    assert torch.get_num_threads() == 3  # restored


def test_torch_threads_restored_when_the_search_fails(monkeypatch):
    X, Q = _data()
    backend = ExactBackend(n_neighbors=4, n_jobs=1).fit(X)

    def broken(*args, **kwargs):
        raise RuntimeError("search failed")

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    monkeypatch.setattr(torch, "topk", broken)
    try:
        with pytest.raises(RuntimeError, match="search failed"):
            backend.kneighbors(Q)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_sklearn_working_memory_sizes_the_blocks(topk_calls):
    X, Q = _data()  # 120 indexed rows, 37 queries
    ten_rows_mb = 10 * 4 * 120 / 2**20
    backend = ExactBackend(n_neighbors=4).fit(X)
    expected = backend.kneighbors(Q)
    with sklearn.config_context(working_memory=ten_rows_mb):
        blocked = backend.kneighbors(Q)
    assert [rows for _, rows in topk_calls] == [37, 10, 10, 10, 7]
    for got, want in zip(blocked, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # the parameter wins over the global setting
    topk_calls.clear()
    backend.set_params(working_memory=2 * ten_rows_mb).fit(X)
    with sklearn.config_context(working_memory=ten_rows_mb):
        backend.kneighbors(Q)
    assert [rows for _, rows in topk_calls] == [20, 17]


def test_exact_search_without_a_fitted_backend_is_the_backends_answer():
    # the approximate backends' fallback: neighbours among ``data`` without a copy
    from skdknn.neighbors._exact import exact_search

    X, Q = _data()
    data = X.astype(np.float32)
    dist, ind = exact_search(data, Q.astype(np.float32), 6)
    want_dist, want_ind = ExactBackend(n_neighbors=6).fit(data).kneighbors(Q)
    np.testing.assert_array_equal(ind, want_ind)
    np.testing.assert_array_equal(dist, want_dist)
    assert dist.dtype == np.float32 and ind.dtype == np.intp


@pytest.mark.parametrize("k", [1, 3])
def test_a_single_query_on_an_indexed_point_is_refined(k):
    # one query row holding a near-duplicate pair: refined like many rows are
    X, _ = _data(seed=5, n=200, d=6)
    X = (10 * X).astype(np.float32)
    backend = ExactBackend(n_neighbors=k).fit(X)
    for row in (0, 17, 199):
        dist, ind = backend.kneighbors(X[row : row + 1])
        assert ind[0, 0] == row
        assert dist[0, 0] == 0.0  # exact, not the expansion's ~1e-3


# ---------------------------------------------------------------------------------
# The refinement on activation-like data: every pair near, most rows crowded
# ---------------------------------------------------------------------------------
def _offset_activations(n=300, n_queries=40, d=512, seed=0):
    """Rows near one far point (ReLU'd common offset plus 1 % noise): every pair's
    expansion loses most of its digits, so every row is refined, most crowded."""
    rng = np.random.default_rng(seed)
    base = 2 * np.abs(rng.normal(size=d))
    X = np.maximum(base + 0.05 * rng.normal(size=(n, d)), 0).astype(np.float32)
    Q = np.maximum(base + 0.05 * rng.normal(size=(n_queries, d)), 0)
    return X, Q.astype(np.float32)


@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
def test_refinement_on_offset_activations_equals_float64_brute_force(storage_dtype):
    X, Q = _offset_activations()
    stored = X.astype(storage_dtype).astype(np.float64)
    ref_dist, ref_ind = (
        NearestNeighbors(n_neighbors=25, algorithm="brute").fit(stored).kneighbors(Q)
    )
    answers = []
    for n_jobs in (1, 2):
        backend = ExactBackend(25, n_jobs=n_jobs, storage_dtype=storage_dtype)
        dist, ind = backend.fit(X).kneighbors(Q)
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-5)
        answers.append((dist, ind))
    # the same bits whatever the number of threads
    np.testing.assert_array_equal(answers[0][0], answers[1][0])


def test_refinement_runs_on_one_thread(monkeypatch):
    """The refinement's many small operations run on one thread (threads waiting
    for each other on a loaded machine made them 15x slower); the product and
    the selection keep ``n_jobs`` threads."""
    import skdknn.neighbors._exact as exact

    seen = []
    real = exact._refine_near_duplicates

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(exact, "_refine_near_duplicates", spy)
    X, Q = _offset_activations(n=100, n_queries=5, d=32)
    before = torch.get_num_threads()
    ExactBackend(5, n_jobs=2).fit(X).kneighbors(Q)
    assert seen == [1]
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------------------
# Ties: decided by index, also at the k-th place
# ---------------------------------------------------------------------------------
def _nearest_by_distance_then_index(X, Q, k):
    """Reference in exact integer arithmetic: sort by squared distance, then index."""
    sq = ((Q[:, None, :].astype(np.int64) - X[None].astype(np.int64)) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(len(X)), sq.shape), sq), axis=1)
    return np.sqrt(np.take_along_axis(sq, order, 1)[:, :k]), order[:, :k]


@pytest.mark.parametrize("k", [1, 4, 9])
@pytest.mark.parametrize("working_memory", [None, 0.001])
def test_ties_are_ordered_by_index_and_the_lowest_indices_kept(k, working_memory):
    """Points of a small integer grid: nearly every row has ties, many straddle
    the k-th place, and many points are duplicates (refined near pairs)."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 4, size=(80, 2))
    Q = rng.integers(-1, 5, size=(30, 2))
    backend = ExactBackend(n_neighbors=k, working_memory=working_memory)
    dist, ind = backend.fit(X.astype(np.float32)).kneighbors(Q.astype(np.float32))
    expected_dist, expected_ind = _nearest_by_distance_then_index(X, Q, k)
    np.testing.assert_array_equal(ind, expected_ind)
    np.testing.assert_allclose(dist, expected_dist, rtol=1e-6)
    # the data do tie at the k-th place: the k-th and (k+1)-th distances are equal
    sq = np.sort(((Q[:, None] - X[None]) ** 2).sum(-1), axis=1)
    assert (sq[:, k] == sq[:, k - 1]).mean() > 0.5


def test_refinement_gathers_rows_in_bounded_chunks(monkeypatch):
    """Recomputing near pairs gathers a bounded number of indexed rows at a time,
    never a copy as large as the index (before: one query among 2,000
    near-duplicates gathered all 2,000 rows at once)."""
    from torch.profiler import ProfilerActivity, profile

    import skdknn.neighbors._exact as exact

    monkeypatch.setattr(exact, "_GATHER_BYTES", 256 * 1024, raising=False)
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(1, 256)).astype(np.float32) + 5, 2000, axis=0)
    X += 1e-4 * rng.normal(size=X.shape).astype(np.float32)
    backend = ExactBackend(5).fit(X)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        backend.kneighbors(X[:10])
    gathers = ("aten::index", "aten::sub", "aten::mul")
    largest = max(e.cpu_memory_usage for e in prof.events() if e.name in gathers)
    assert largest < X.nbytes / 2  # index 2 MB; chunks of 256 kB
    _check_kth_distances(X, X[:10], 5)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_crowded_rows_compared_a_group_at_a_time_give_the_same_answer(monkeypatch, k):
    """On data full of duplicates most rows are crowded (more than k points tie
    with the k-th); their scores are compared a group of rows at a time (they
    were copied for the whole block at once, 3x working_memory at the peak).
    One row per group gives the answer of one group for all, and the exact one."""
    import skdknn.neighbors._exact as exact

    rng = np.random.default_rng(0)
    X = np.repeat(rng.integers(-20, 20, size=(40, 5)), 6, axis=0).astype(np.float32)
    Q = X[rng.permutation(len(X))[:50]] + rng.integers(0, 2, size=(50, 5))
    Q = Q.astype(np.float32)
    whole = ExactBackend(k).fit(X).kneighbors(Q)
    monkeypatch.setattr(exact, "_GATHER_BYTES", 4 * len(X))  # one row per group
    grouped = ExactBackend(k).fit(X).kneighbors(Q)
    ref_dist, ref_ind = _nearest_by_distance_then_index(X, Q, k)
    for dist, ind in (whole, grouped):
        np.testing.assert_array_equal(ind, ref_ind)
        np.testing.assert_allclose(dist, ref_dist, rtol=1e-6)


@pytest.mark.parametrize("storage_dtype", ["float32", "float16"])
def test_an_index_of_one_row_gives_the_bits_of_a_larger_one(storage_dtype):
    """A product with one indexed row is a matrix-vector product, which BLAS
    computes by another kernel that rounds otherwise (MKL on an AVX-512 CPU: a
    shard of one point gave other last bits). It is padded to two rows."""
    X, Q = (a.astype(np.float32) for a in _data(n=200, d=300, n_queries=20))
    stored = ExactBackend(storage_dtype=storage_dtype).fit(X)._fitted_rows()
    one = ExactBackend(n_neighbors=1, storage_dtype=storage_dtype).fit(stored[7:8])
    dist, ind = one.kneighbors(Q)
    assert (ind == 0).all()
    full = ExactBackend(n_neighbors=200, storage_dtype=storage_dtype).fit(stored)
    all_dist, all_ind = full.kneighbors(Q)
    np.testing.assert_array_equal(dist[:, 0], all_dist[all_ind == 7])


@pytest.mark.parametrize(("data", "d"), [("gaussian", 300), ("grid", 8), ("grid", 30)])
def test_one_query_at_a_time_gives_the_bits_of_a_batch(data, d):
    """BLAS computes products of a few query rows by other kernels that round
    otherwise (MKL on an AVX-512 CPU: 1 to 12 queries); on a grid, where many
    distances tie, a query asked alone then got other neighbours than in a batch
    (64 of 64 queries at 8 features). Blocks of fewer than 16 queries are padded."""
    rng = np.random.default_rng(0)
    if data == "gaussian":
        X, Q = (a.astype(np.float32) for a in _data(n=200, d=d, n_queries=40))
    else:
        X = (rng.integers(0, 3, (300, d)) * 0.1).astype(np.float32)
        Q = (rng.integers(0, 3, (40, d)) * 0.1 + 0.05).astype(np.float32)
    backend = ExactBackend(n_neighbors=10).fit(X)
    whole = backend.kneighbors(Q)
    for i in range(len(Q)):
        dist, ind = backend.kneighbors(Q[i : i + 1])
        np.testing.assert_array_equal(ind[0], whole[1][i])
        np.testing.assert_array_equal(dist[0], whole[0][i])
    dist, ind = backend.kneighbors(Q[3:10])  # a block of 7
    np.testing.assert_array_equal(ind, whole[1][3:10])
