"""ShardedBackend without a cluster (shards in local threads) and the exact merge of
the shards' answers. The same backend on a real Dask cluster: tests/test_dask.py."""

from __future__ import annotations

import pickle
import re
import sys

import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdknn import DeepKNNClassifier, load_model, save_model
from skdknn.exceptions import ShardLostError
from skdknn.neighbors import (
    AnnoyBackend,
    ExactBackend,
    FaissBackend,
    ProjectedBackend,
    ShardedBackend,
    merge_kneighbors,
    shard_bounds,
)
from skdknn.neighbors._exact import sort_by_distance_then_index
from skdknn.persistence import MODEL_FILE


# ---------------------------------------------------------------------------------
# Pure functions, hand-computed
# ---------------------------------------------------------------------------------
def test_merge_of_two_shards_by_hand():
    # query 0: shard A has 1 (0.2) and 3 (0.9); shard B has 10 (0.1) and 12 (0.9)
    # query 1: a tie at 0.4 between 11 (B) and 2 (A): the lower index first
    dist, ind = merge_kneighbors(
        [np.array([[0.2, 0.9], [0.4, 0.7]]), np.array([[0.1, 0.9], [0.3, 0.4]])],
        [np.array([[1, 3], [2, 0]]), np.array([[10, 12], [10, 11]])],
        3,
    )
    np.testing.assert_array_equal(ind, [[10, 1, 3], [10, 2, 11]])
    np.testing.assert_array_equal(dist, np.float32([[0.1, 0.2, 0.9], [0.3, 0.4, 0.4]]))
    assert dist.dtype == np.float32 and ind.dtype == np.intp


def test_merge_keeps_lowest_indices_of_a_tie_at_the_kth_place():
    # four points at 0.5 for the last two places: 3 and 5 win over 8 and 9
    dist, ind = merge_kneighbors(
        [np.array([[0.1, 0.5, 0.5]]), np.array([[0.5, 0.5]])],
        [np.array([[0, 8, 9]]), np.array([[5, 3]])],
        3,
    )
    np.testing.assert_array_equal(ind, [[0, 3, 5]])
    np.testing.assert_array_equal(dist, np.float32([[0.1, 0.5, 0.5]]))


def test_merge_of_unequal_shards_and_errors():
    # a shard smaller than k returns all its points
    dist, ind = merge_kneighbors(
        [np.array([[3.0]]), np.array([[1.0, 2.0, 4.0]])],
        [np.array([[9]]), np.array([[0, 1, 2]])],
        4,
    )
    np.testing.assert_array_equal(ind, [[0, 1, 9, 2]])
    expected = "Cannot keep 5 neighbours out of the 4 that the shards returned."
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        merge_kneighbors([np.zeros((1, 1)), np.zeros((1, 3))], [np.ones((1, 2))] * 2, 5)
    expected = (
        "The shards returned distances of shape (1, 2) but indices of shape (1, 3)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        merge_kneighbors([np.zeros((1, 2))], [np.zeros((1, 3))], 1)


def test_merge_answers_float32_and_intp_whatever_the_engines_answer():
    # an engine of the user's may answer float64 distances and int32 ids
    dist, ind = merge_kneighbors(
        [np.array([[0.5, 0.25]]), np.array([[0.125]])],
        [np.int32([[3, 1]]), np.int32([[7]])],
        2,
    )
    np.testing.assert_array_equal(ind, [[7, 1]])
    np.testing.assert_array_equal(dist, np.float32([[0.125, 0.25]]))
    assert dist.dtype == np.float32 and ind.dtype == np.intp


def test_sort_and_tie_helpers_by_hand():
    dist = np.float32([[0.3, 0.1, 0.3, 0.1]])
    d, i = sort_by_distance_then_index(dist, np.array([[4, 6, 2, 5]]))
    np.testing.assert_array_equal(i, [[5, 6, 2, 4]])
    np.testing.assert_array_equal(d, np.float32([[0.1, 0.1, 0.3, 0.3]]))


def test_shard_bounds():
    np.testing.assert_array_equal(shard_bounds(10, 3), [0, 4, 7, 10])
    np.testing.assert_array_equal(shard_bounds(4, 4), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(shard_bounds(5, 1), [0, 5])
    with pytest.raises(ValueError, match="5 rows into 6"):
        shard_bounds(5, 6)
    # integer arithmetic: beyond 2**53 rows a float quotient would lose rows
    n = 2**60 - 1  # divisible by 3
    bounds = shard_bounds(n, 3)
    np.testing.assert_array_equal(bounds, [0, n // 3, 2 * (n // 3), n])
    assert bounds.dtype == np.intp


# ---------------------------------------------------------------------------------
# Sharded exact == ExactBackend, bit for bit
# ---------------------------------------------------------------------------------
def _data(seed=0, n=400, d=8, duplicates=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if duplicates:  # exact ties, crowded near-duplicate rows, self-queries
        X = np.vstack([X, X[: n // 3], X[:7], np.zeros((5, d))])
    return X, rng.normal(size=(60, d))


def _same(answer, expected):
    for a, b in zip(answer, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_sharded_exact_equals_exact(metric, n_shards):
    X, Q = _data()
    sharded = ShardedBackend(n_shards=n_shards, n_neighbors=9, metric=metric).fit(X)
    exact = ExactBackend(n_neighbors=9, metric=metric).fit(X)
    for query in (Q, X[:80], None):
        (d1, i1), (d2, i2) = sharded.kneighbors(query), exact.kneighbors(query)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(d1, d2)
    assert sharded.n_shards_ == n_shards
    assert not (
        sharded.kneighbors(return_distance=False) == np.arange(len(X))[:, None]
    ).any()


def test_k_larger_than_a_shard_and_graph():
    X, Q = _data(n=30, duplicates=False)
    sharded = ShardedBackend(n_shards=4, n_neighbors=12).fit(X)  # shards of 7-8
    exact = ExactBackend(n_neighbors=12).fit(X)
    np.testing.assert_array_equal(sharded.kneighbors(Q)[1], exact.kneighbors(Q)[1])
    np.testing.assert_array_equal(sharded.kneighbors()[1], exact.kneighbors()[1])
    _, ind = sharded.kneighbors(Q, n_neighbors=30)
    assert all(sorted(row) == list(range(30)) for row in ind)
    # BLAS multiplies a matrix of 7 columns with another kernel than one of 30:
    # distances may differ in the last bit (identical on shards of real size)
    graph, ref = sharded.transform(Q), exact.transform(Q)
    np.testing.assert_array_equal(graph.indices, ref.indices)
    np.testing.assert_allclose(graph.data, ref.data, rtol=1e-6)


def test_default_is_one_shard_without_a_client():
    X, _ = _data(n=50, duplicates=False)
    assert ShardedBackend().fit(X).n_shards_ == 1


@pytest.mark.parametrize("n_jobs", [None, 1, 2, -1, -2])
def test_n_jobs_follows_joblib_for_local_shards(monkeypatch, n_jobs):
    # joblib's convention (-1: every core, -2: all but one), as every other
    # backend reads n_jobs; -1 once meant one thread and -2 two
    from joblib import effective_n_jobs

    from skdknn.neighbors import _sharded

    used = []

    class Recording(_sharded.ThreadPoolExecutor):
        def __init__(self, max_workers):
            used.append(max_workers)
            super().__init__(max_workers)

    monkeypatch.setattr(_sharded, "ThreadPoolExecutor", Recording)
    X = np.random.default_rng(0).normal(size=(60, 4))
    ShardedBackend(n_shards=4, n_neighbors=2, n_jobs=n_jobs).fit(X).kneighbors(X)
    threads = 4 if n_jobs is None else min(4, effective_n_jobs(n_jobs))
    expected = None if threads == 1 else threads  # one thread: no pool
    assert used == ([] if expected is None else [expected, expected])


@pytest.mark.parametrize("name", ["faiss", "annoy"])
def test_sharded_approximate_recall(name):
    # Each shard is a smaller index: the merged recall is no lower than unsharded
    X, Q = _data(seed=3, n=2000, d=16, duplicates=False)
    inner = {
        "faiss": FaissBackend(index="ivf", random_state=0),
        "annoy": AnnoyBackend(n_trees=5, random_state=0),
    }[name]
    _, ref = ExactBackend(n_neighbors=20).fit(X).kneighbors(Q)
    one = clone(inner).set_params(n_neighbors=20).fit(X).kneighbors(Q)[1]
    two = ShardedBackend(inner, n_shards=2, n_neighbors=20).fit(X).kneighbors(Q)[1]

    def recall(ind):
        return np.mean(
            [np.intersect1d(a, b).size / 20 for a, b in zip(ind, ref, strict=True)]
        )

    assert recall(two) >= recall(one) - 0.01


def test_inner_backend_is_cloned_and_configured():
    X, _ = _data(n=60, duplicates=False)
    inner = AnnoyBackend(n_neighbors=2, metric="cosine", n_trees=3)
    sharded = ShardedBackend(inner, n_shards=2, n_neighbors=4, metric="cosine").fit(X)
    backends = [shard.backend for shard in sharded._shards]
    assert all(b is not inner and b.n_neighbors == 4 for b in backends)
    assert all(b.metric == "euclidean" and b.n_trees == 3 for b in backends)
    assert backends[0] is not backends[1]
    assert not hasattr(inner, "n_samples_fit_")
    assert sharded.get_params()["backend__n_trees"] == 3


@pytest.mark.parametrize("wrapper", [ShardedBackend, ProjectedBackend])
def test_a_metric_on_the_inner_backend_is_not_silently_dropped(wrapper):
    # the wrapper searches its inner backend with the euclidean distance: an inner
    # metric="cosine" under a euclidean wrapper once gave euclidean neighbours
    X, _ = _data(n=30, duplicates=False)
    X = X * np.arange(1, 31)[:, None]  # row norms differ: cosine != euclidean
    with pytest.raises(
        ValueError,
        match=r"inner backend's metric='cosine'.*"
        rf"metric='cosine' on the {wrapper.__name__}",
    ):
        wrapper(ExactBackend(metric="cosine"), n_neighbors=3).fit(X)
    # the same metric on both, or on the wrapper only: the cosine answer
    expected = ExactBackend(n_neighbors=3, metric="cosine").fit(X).kneighbors(X[:5])
    for inner in (ExactBackend(metric="cosine"), ExactBackend()):
        params = {"n_components": 30} if wrapper is ProjectedBackend else {}
        got = wrapper(inner, n_neighbors=3, metric="cosine", **params).fit(X)
        np.testing.assert_array_equal(got.kneighbors(X[:5])[1], expected[1])


def test_clone_shares_the_client_and_keeps_parameters():
    client = object.__new__(
        type("Client", (), {"submit": 1, "scatter": 1, "gather": 1})
    )
    sharded = ShardedBackend("annoy", 3, client, n_neighbors=4, timeout=5.0)
    copy = clone(sharded)
    assert copy.client is client and copy is not sharded
    assert copy.get_params(deep=False) == sharded.get_params(deep=False)
    # an inner backend instance is cloned too (its own parameters kept)
    sharded = ShardedBackend(AnnoyBackend(n_trees=3), 3, client, n_neighbors=4)
    copy = clone(sharded)
    assert copy.client is client and copy.backend is not sharded.backend
    assert copy.get_params() == {**sharded.get_params(), "backend": copy.backend}


@pytest.mark.parametrize(
    "params",
    [{"n_shards": 0}, {"timeout": 0}, {"client": "tcp://nowhere"}, {"backend": 3}],
)
def test_bad_parameters_raise_at_fit(params):
    X, _ = _data(n=20, duplicates=False)
    with pytest.raises(ValueError, match=next(iter(params))):
        ShardedBackend(**params).fit(X)


def test_more_shards_than_points():
    X, _ = _data(n=5, duplicates=False)
    with pytest.raises(
        ValueError,
        match="n_shards=6 exceeds the number of points to index, n_samples = 5",
    ):
        ShardedBackend(n_shards=6, n_neighbors=1).fit(X)
    # as many shards as points: one point each. The same neighbours; the
    # distances to float32 rounding only: products of 5 queries and 1 (padded to
    # 2) or 5 rows are computed by other BLAS kernels, which round otherwise on
    # some CPUs (MKL on AVX-512: 1 ulp here; docs/scaling-out.md)
    sharded = ShardedBackend(n_shards=5, n_neighbors=2).fit(X)
    np.testing.assert_array_equal(sharded.shard_bounds_, np.arange(6))
    dist, ind = sharded.kneighbors(X)
    exact_dist, exact_ind = ExactBackend(n_neighbors=2).fit(X).kneighbors(X)
    np.testing.assert_array_equal(ind, exact_ind)
    np.testing.assert_allclose(dist, exact_dist, rtol=3e-7, atol=0)


def test_a_failed_refit_keeps_the_fitted_shards():
    # a refit refused while building (here: an inner ProjectedBackend) left the new
    # shard bounds over the old shards: the old rows' ids at the new offsets,
    # silently wrong
    X, Q = _data(n=50, duplicates=False)
    sharded = ShardedBackend(n_shards=3, n_neighbors=2).fit(X)
    expected = sharded.kneighbors(Q)
    sharded.set_params(n_shards=2, backend=ProjectedBackend("exact", n_components=2))
    with pytest.raises(ValueError, match="cannot shard a ProjectedBackend"):
        sharded.fit(X)
    assert sharded.n_shards_ == 3 and len(sharded.shard_bounds_) == 4
    _same(sharded.kneighbors(Q), expected)
    with pytest.raises(ValueError, match="exceeds the number of points"):
        sharded.set_params(backend="exact", n_shards=6).fit(X[:5])
    assert sharded.n_samples_fit_ == len(X)
    _same(sharded.kneighbors(Q), expected)


def test_scatter_without_a_client():
    X, _ = _data(n=20, duplicates=False)
    with pytest.raises(ValueError, match="No Dask client"):
        ShardedBackend(n_shards=2).fit(X).scatter()


# ---------------------------------------------------------------------------------
# Persistence of a local model; in a DeepKNNClassifier
# ---------------------------------------------------------------------------------
def test_pickle_and_save_model_round_trips(tmp_path):
    X, Q = _data(seed=4)
    for inner in ("exact", "annoy"):
        sharded = ShardedBackend(inner, n_shards=3, n_neighbors=5).fit(X)
        expected = sharded.kneighbors(Q), sharded.kneighbors()
        copies = [
            pickle.loads(pickle.dumps(sharded)),
            load_model(save_model(sharded, tmp_path / inner)),
            load_model(tmp_path / inner, mmap=False),
        ]
        for copy in copies:
            for (d1, i1), (d2, i2) in zip(
                expected, (copy.kneighbors(Q), copy.kneighbors()), strict=True
            ):
                np.testing.assert_array_equal(i1, i2)
                np.testing.assert_array_equal(d1, d2)
    # exact shards keep their rows once, in the inner backend's files
    files = sorted(p.name for p in (tmp_path / "exact").iterdir())
    assert not any("rows" in f for f in files)
    assert sum(".fit_X.npy" in f for f in files) == 3
    # annoy copies the rows into its trees: the rows (for X=None) have files too
    assert sum("rows.npy" in p.name for p in (tmp_path / "annoy").iterdir()) == 3


def test_in_a_classifier_equals_exact(tmp_path):
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=300, n_features=10, n_informative=5, n_classes=3, random_state=0
    )
    params = dict(n_neighbors=7, calibration_size=45, max_epochs=3, random_state=0)
    exact = DeepKNNClassifier(**params).fit(X[:250], y[:250])
    sharded = DeepKNNClassifier(backend=ShardedBackend(n_shards=3), **params)
    sharded.fit(X[:250], y[:250])
    assert all(b.n_shards_ == 3 and b.n_neighbors == 7 for b in sharded.backends_)
    for a, b in zip(
        exact.kneighbors(X[250:]), sharded.kneighbors(X[250:]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(exact.p_values(X[250:]), sharded.p_values(X[250:]))
    path = tmp_path / "model.joblib"
    joblib.dump(sharded, path)
    np.testing.assert_array_equal(
        joblib.load(path).predict(X[250:]), exact.predict(X[250:])
    )


@parametrize_with_checks([ShardedBackend(n_shards=2), ShardedBackend("annoy")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _misaligned(X):
    """A float32 copy of X at an address that is not a multiple of 4, as numpy
    arrays unpickled from Dask's frames on a worker are."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    buffer = np.empty(X.nbytes + 1, dtype=np.uint8)
    out = np.frombuffer(buffer[1:].data, dtype=np.float32).reshape(X.shape)
    out[...] = X
    assert not out.flags.aligned
    return out


def test_misaligned_rows_give_the_same_answer():
    # Found by benchmarks/dask_scale.py: every distance computed on a worker
    # differed in the last bits (numpy's einsum sums misaligned rows of more than
    # 8,192 floats in other chunks): the paper CNN's first layer is 12,544 wide
    rng = np.random.default_rng(7)
    X = np.abs(rng.normal(size=(300, 12544))).astype(np.float32)
    Q = np.abs(rng.normal(size=(20, 12544))).astype(np.float32)
    ref = ExactBackend(n_neighbors=5).fit(X).kneighbors(Q)
    # rows handed over without a copy, as the classifier and the shards do
    exact = ExactBackend(n_neighbors=5)._fit_rows(_misaligned(X), copy=False)
    for a, b in zip(exact.kneighbors(_misaligned(Q)), ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_random_state_seeds_each_shard_engine() -> None:
    # ShardedBackend("annoy") built unseeded trees: two fits answered differently
    # (scikit-learn's check_pipeline_consistency failed in CI now and then)
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    fits = [
        ShardedBackend(AnnoyBackend(n_trees=1), 3, n_neighbors=8, random_state=0).fit(X)
        for _ in range(2)
    ]
    answers = [fitted.kneighbors(X[:50]) for fitted in fits]
    for left, right in zip(*answers, strict=True):
        np.testing.assert_array_equal(left, right)
    # one seed per shard, drawn in order from random_state; a user's seed is kept
    seeds = np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=3)
    assert [s.backend.random_state for s in fits[0]._shards] == seeds.tolist()
    kept = ShardedBackend(AnnoyBackend(random_state=5), 3, random_state=0).fit(X)
    assert [s.backend.random_state for s in kept._shards] == [5, 5, 5]


_NOT_PROJECTED = (
    "A ShardedBackend cannot shard a ProjectedBackend: each shard would fit its own "
    "projection, and distances measured in different projections cannot be "
    "merged. Project first, then shard: ProjectedBackend(ShardedBackend(...), "
    "n_components=...)."
)
_NOT_SHARDED = (
    "A ShardedBackend cannot shard a ShardedBackend: its shards would wait for "
    "workers that the outer shards occupy. Use one ShardedBackend with more shards "
    "(n_shards)."
)


@pytest.mark.parametrize(
    "inner, message",
    [
        (ProjectedBackend("exact", n_components=2), _NOT_PROJECTED),
        ("pca2+exact", _NOT_PROJECTED),
        (ShardedBackend(n_shards=2), _NOT_SHARDED),
    ],
    ids=["projected", "recipe", "sharded"],
)
def test_projected_or_sharded_inner_backends_are_refused(inner, message):
    # each shard fitted its own projection (with its own seed): the merge then
    # compared distances from different spaces, rows 0.9 away came out at 0.01
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        ShardedBackend(inner, n_shards=2, n_neighbors=3).fit(X)
    # the other nesting is right: project once, then shard the projected rows
    outer = ProjectedBackend(ShardedBackend(n_shards=2), n_components=2, n_neighbors=3)
    alone = ProjectedBackend("exact", n_components=2, n_neighbors=3)
    for left, right in zip(
        outer.fit(X).kneighbors(X), alone.fit(X).kneighbors(X), strict=True
    ):
        np.testing.assert_array_equal(left, right)


# ---------------------------------------------------------------------------------
# Error texts, whole (mutation testing: a changed word fails here)
# ---------------------------------------------------------------------------------
class _Future:
    """Stands for a Dask future in a given state (no cluster needed)."""

    def __init__(self, status):
        self.status = status


class _Client:
    """Stands for a Dask client: a status and a cluster without workers."""

    def __init__(self, status="running"):
        self.status = status

    def __repr__(self):
        return "<Client fake>"

    def submit(self, *args, **kwargs):
        raise AssertionError("nothing is submitted")

    scatter = gather = submit

    def nthreads(self):
        return {}


def _on_fake_cluster(statuses, client_status="running"):
    X, _ = _data(n=400, duplicates=False)
    sharded = ShardedBackend(n_shards=3, n_neighbors=2).fit(X)
    sharded._client = _Client(client_status)
    sharded._shards = [_Future(s) for s in statuses]
    return sharded, X


_LOST_ADVICE = (
    " lost with the worker that held it; refit the backend, or restore a saved "
    "model and call scatter(client). No neighbours are returned from the other "
    "shards alone."
)


@pytest.mark.parametrize("status", ["lost", "error", "cancelled"])
def test_one_lost_shard_is_named_with_its_rows(status):
    sharded, X = _on_fake_cluster(["finished", status, "pending"])
    expected = "ShardedBackend: shard 1 of 3 (rows 134 to 266) was" + _LOST_ADVICE
    with pytest.raises(ShardLostError, match=f"^{re.escape(expected)}$"):
        sharded.kneighbors(X[:3])


def test_several_lost_shards_are_named_in_order():
    sharded, X = _on_fake_cluster(["cancelled", "lost", "error"])
    expected = (
        "ShardedBackend: shard 1 of 3 (rows 134 to 266), shard 2 of 3 (rows 267 "
        "to 399), shard 0 of 3 (rows 0 to 133) were" + _LOST_ADVICE
    )
    with pytest.raises(ShardLostError, match=f"^{re.escape(expected)}$"):
        sharded.kneighbors(X[:3])


@pytest.mark.parametrize("status", ["closing", "closed"])
def test_a_closed_client_is_named(status):
    sharded, X = _on_fake_cluster(["finished"] * 3, client_status=status)
    expected = (
        "ShardedBackend: the Dask client that holds its 3 shards (<Client fake>) is "
        "closed, and the shards went with it. Keep the client open while the model "
        "is used; to keep a model past its client, gather() it first (or "
        "save_model), then scatter(client) it to a new one."
    )
    with pytest.raises(ShardLostError, match=f"^{re.escape(expected)}$"):
        sharded.kneighbors(X[:3])


def test_a_cluster_without_workers_is_refused():
    X, _ = _data(n=20, duplicates=False)
    expected = r"^The Dask cluster has no workers to hold the shards\.$"
    with pytest.raises(RuntimeError, match=expected):
        ShardedBackend(n_shards=2, client=_Client()).fit(X)
    local = ShardedBackend(n_shards=2).fit(X)
    with pytest.raises(RuntimeError, match=expected):
        local.scatter(_Client())


def test_texts_of_the_errors_without_a_client():
    da = pytest.importorskip("dask.array")
    X, _ = _data(n=20, duplicates=False)
    with pytest.raises(
        ValueError,
        match=r"^No Dask client to scatter the shards to: pass one, or create one "
        r"\(distributed\.Client\) first\.$",
    ):
        ShardedBackend(n_shards=2).fit(X).scatter()
    with pytest.raises(
        ValueError,
        match=r"^Fitting a ShardedBackend on a dask array needs a distributed client "
        r"\(pass client= or create one\); compute the array first to fit locally\.$",
    ):
        ShardedBackend().fit(da.from_array(X, chunks=5))
    # parameters are checked first
    with pytest.raises(ValueError, match="'n_shards' parameter"):
        ShardedBackend(n_shards=0).fit(da.from_array(X, chunks=5))
    from dask import delayed

    local = ShardedBackend(n_shards=2).fit(X)
    with pytest.raises(
        RuntimeError, match=r"^ShardedBackend: the shards are not on workers\.$"
    ):
        local._kneighbors_delayed(delayed(X), 2, True)


def test_worker_side_query_preparation_and_merge():
    from skdknn.neighbors._sharded import _merge_answers, _prepare_query

    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 4))
    for bad in (X[:, :3], X[:, :, None]):
        expected = (
            f"X has {bad.shape[1:]} features per row, but ShardedBackend is "
            "expecting 4 features as input."
        )
        with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
            _prepare_query(bad, "euclidean", 4)
    np.testing.assert_array_equal(
        _prepare_query(X, "cosine", 4),
        ExactBackend(metric="cosine").fit(X)._prepare(X),
    )
    answers = [
        (np.array([[0.1, 0.5]]), np.array([[4, 7]])),
        (np.array([[0.3, 0.5]]), np.array([[12, 2]])),
    ]
    np.testing.assert_array_equal(_merge_answers(answers, 3, False), [[4, 12, 2]])
    dist, ind = _merge_answers(answers, 3, True)
    np.testing.assert_array_equal(ind, [[4, 12, 2]])


def test_a_shard_weighs_the_rows_it_holds():
    from dask.sizeof import sizeof

    X, _ = _data(n=100, duplicates=False)
    rows = X.astype(np.float32)[:50].nbytes
    exact = ShardedBackend(n_shards=2).fit(X)
    assert all(rows <= sizeof(s) < 2 * rows for s in exact._shards)
    annoy = ShardedBackend("annoy", n_shards=2).fit(X)  # the rows kept twice
    assert all(2 * rows <= sizeof(s) < 3 * rows for s in annoy._shards)


# ---------------------------------------------------------------------------------
# What the shards' engines are handed and what they answer (on a worker, rows and
# queries arrive unpickled from Dask's frames: read-only, misaligned, any dtype)
# ---------------------------------------------------------------------------------
class _RecordingEngine(NearestNeighbors):
    """A third-party engine (scikit-learn's) that records the arrays it is given and
    answers int32 ids."""

    def fit(self, X, y=None):
        self.fitted_on_ = X
        return super().fit(X)

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        self.queried_with_ = X
        dist, ind = super().kneighbors(X, n_neighbors)
        return dist, ind.astype(np.int32)


def _read_only(X):
    X.flags.writeable = False
    return X


def _engine_ready(X, *flags):
    return X.dtype == np.float32 and all(
        X.flags[flag] for flag in ("C_CONTIGUOUS", "ALIGNED", *flags)
    )


def test_a_third_party_engine_in_shards_equals_exact():
    X, Q = _data(n=90, duplicates=False)
    sharded = ShardedBackend(NearestNeighbors(metric="euclidean"), 3, n_neighbors=4)
    got, expected = sharded.fit(X), ExactBackend(n_neighbors=4).fit(X)
    for query in (Q, None):
        np.testing.assert_array_equal(
            got.kneighbors(query)[1], expected.kneighbors(query)[1]
        )
    assert all(isinstance(s.backend, NearestNeighbors) for s in got._shards)


@pytest.mark.parametrize(
    "make",
    [
        lambda X: _read_only(X[:, ::2]),  # float64, strided, read-only
        lambda X: _read_only(X.astype(np.float32)[:, ::2]),  # float32 strided
        lambda X: _read_only(np.ascontiguousarray(X[:, ::2], dtype=np.float32)),
        lambda X: _misaligned(X[:, ::2]),
    ],
    ids=["float64-strided", "float32-strided", "float32-read-only", "misaligned"],
)
def test_shard_engines_get_c_contiguous_float32_and_answer_float32_intp(make):
    from skdknn.neighbors._sharded import _fit_shard, _search_shard

    rng = np.random.default_rng(0)
    rows, queries = make(rng.normal(size=(40, 6))), make(rng.normal(size=(5, 6)))
    shard = _fit_shard(_RecordingEngine(n_neighbors=3), rows)
    # the index owns writeable rows; queries are only read
    assert _engine_ready(shard.backend.fitted_on_, "WRITEABLE")
    np.testing.assert_array_equal(shard.rows, np.float32(rows))
    # a shard far into the index (past 2**31 rows): its ids are not wrapped
    offset = 2**31 + 7
    dist, ind = _search_shard(shard, queries, 3, offset)
    assert _engine_ready(shard.backend.queried_with_)
    assert dist.dtype == np.float32 and ind.dtype == np.intp
    ref = NearestNeighbors(n_neighbors=3).fit(np.float32(rows))
    ref_dist, ref_ind = ref.kneighbors(np.float32(queries))
    np.testing.assert_array_equal(ind, ref_ind + offset)
    np.testing.assert_array_equal(dist, np.float32(ref_dist))


def test_numpy_rows_never_import_dask(monkeypatch):
    # dask is optional: a local fit and search of numpy rows does not import it
    for name in [m for m in sys.modules if m == "dask" or m.startswith("dask.")]:
        monkeypatch.delitem(sys.modules, name)
    X, Q = _data(n=50, duplicates=False)
    sharded = ShardedBackend(n_shards=2, n_neighbors=3).fit(X)
    _same(sharded.kneighbors(Q), ExactBackend(n_neighbors=3).fit(X).kneighbors(Q))
    assert "dask" not in sys.modules


# ---------------------------------------------------------------------------------
# The shards' own row files (engines that do not keep the rows: Annoy)
# ---------------------------------------------------------------------------------
def test_shard_rows_are_saved_once_and_mapped_copy_on_write(tmp_path):
    X, _ = _data(n=600, d=16, duplicates=False)
    sharded = ShardedBackend("annoy", n_shards=2, n_neighbors=3, random_state=0).fit(X)
    expected = sharded.kneighbors()
    path = save_model(sharded, tmp_path / "model")
    # the rows are in the shards' .npy files only, not pickled in the model file too
    rows_bytes = X.astype(np.float32).nbytes
    assert (path / MODEL_FILE).stat().st_size < rows_bytes / 10
    assert sum(f.stat().st_size for f in path.glob("*.rows.npy")) > rows_bytes
    mapped = load_model(path)
    rows = [shard.own_rows for shard in mapped._shards]
    assert all(isinstance(r, np.memmap) and r.mode == "c" for r in rows)
    _same(mapped.kneighbors(), expected)
    rows[0][:] = 0  # copy-on-write: this process's pages change, the file does not
    in_memory = load_model(path, mmap=False)
    rows = [shard.own_rows for shard in in_memory._shards]
    assert not any(isinstance(r, np.memmap) for r in rows)
    np.testing.assert_array_equal(np.vstack(rows), np.float32(X))
    _same(in_memory.kneighbors(), expected)


def test_a_missing_or_pickled_shard_rows_file_is_refused(tmp_path):
    X, _ = _data(n=40, duplicates=False)
    sharded = ShardedBackend("annoy", n_shards=2, n_neighbors=3).fit(X)
    prefix = tmp_path / "index-0"
    missing = f"{prefix}.shard-0.rows.npy"
    expected = f"The shard rows file {missing!r} is missing."
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(expected)}$"):
        sharded._load_index(prefix, mmap=True)
    # a file holding a pickle is never unpickled (that would run its code)
    np.save(missing, np.array([{"rows": 1}], dtype=object), allow_pickle=True)
    np.save(f"{prefix}.shard-1.rows.npy", np.float32(X[20:]))
    with pytest.raises(ValueError, match="allow_pickle=False"):
        sharded._load_index(prefix, mmap=False)
