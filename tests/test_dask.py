"""skdknn on a real Dask cluster: a LocalCluster of 2 worker processes (1 thread
each) started here, shared by the module and closed at its end.

Sharded exact search == ExactBackend bit for bit (indices, distances, and the
DkNN's predictions and credibility); sharded approximate engines keep their recall;
dask-array inputs (DeepKNNClassifier fitted and queried on dask arrays of images ==
the same on numpy arrays, with and without a cluster); GridSearchCV under joblib's
dask backend == the local search;
an attack blockwise; a joblib round trip and re-scatter; workers lost between fit
and predict (last: a worker retired, then the other killed).
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
import warnings

import dask
import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV

from skdknn import DeepKNNClassifier, FGSMAttack
from skdknn._dask import active_client
from skdknn.exceptions import ShardLostError
from skdknn.neighbors import (
    AnnoyBackend,
    ExactBackend,
    FaissBackend,
    ShardedBackend,
)

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

#: Seconds any future may take here before the test fails instead of hanging.
TIMEOUT = 60

#: ``SKDKNN_TEST_DASK_WORKERS=threads`` runs the clusters' workers as threads of the
#: test process. Mutation testing needs it (tools/mutation.py sets it): mutmut runs
#: each mutant in a process forked from its server, where worker processes do not
#: start, and a mutant is switched on in the process that runs the tests only.
THREADS = os.environ.get("SKDKNN_TEST_DASK_WORKERS") == "threads"


def _cluster():
    """A LocalCluster of 2 single-threaded workers (processes unless THREADS)."""
    return distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=not THREADS,
        dashboard_address=None,
        # the tests measure correctness, not the workers' memory
        memory_limit=0,
    )


@pytest.fixture(scope="module")
def client():
    with (
        _cluster() as cluster,
        distributed.Client(cluster, timeout=TIMEOUT) as client,
    ):
        client.wait_for_workers(2, timeout=TIMEOUT)
        # the workers import torch and skdknn once, here, not in the first test
        client.run(lambda: __import__("skdknn.neighbors") and None)
        yield client


def _data(seed=0, n=900, d=12):
    """Gaussian rows with exact duplicates and all-zero rows (ties, near-duplicate
    queries), and queries."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X = np.vstack([X, X[: n // 4], np.zeros((4, d))])
    return X, rng.normal(size=(100, d))


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------------------------
# First, before the cluster starts: dask arrays on Dask's local scheduler
# ---------------------------------------------------------------------------------
#: Every output of the one-pass method, and its array type.
FIELDS = ("prediction", "p_values", "credibility", "confidence", "counts")


def _images(n=300, seed=0):
    """Small 1 x 8 x 8 "images" of 3 classes (a flat MLP sees 64 features)."""
    X, y = make_classification(
        n_samples=n, n_features=64, n_informative=8, n_classes=3, random_state=seed
    )
    return X.reshape(n, 1, 8, 8).astype(np.float32), y


def _image_dknn(**params):
    from skdknn.nets import MLP

    defaults = dict(
        net=MLP,
        n_neighbors=6,
        calibration_size=45,
        max_epochs=2,
        batch_size=48,
        random_state=0,
    )
    return DeepKNNClassifier(**{**defaults, **params})


def _assert_same_model(dask_model, numpy_model):
    for name in (
        "train_indices_",
        "calibration_indices_",
        "y_index_",
        "calibration_nonconformity_",
        "calibration_labels_",
        "input_range_",
    ):
        np.testing.assert_array_equal(
            getattr(dask_model, name), getattr(numpy_model, name), err_msg=name
        )
    assert dask_model.input_shape_ == numpy_model.input_shape_
    assert dask_model.n_features_in_ == numpy_model.n_features_in_


ALL_METHODS = (
    "predict",
    "predict_proba",
    "p_values",
    "credibility",
    "confidence",
    "neighbor_counts",
    "predict_set",
)


def _assert_same_outputs(dask_model, numpy_model, X_dask, X, methods=ALL_METHODS):
    """The one-pass method and ``methods``: dask arrays chunked like X_dask, whose
    values equal the numpy model's on X."""
    result = dask_model.predict_with_credibility(X_dask)
    expected = numpy_model.predict_with_credibility(X)
    assert sorted(result) == sorted(expected)
    for field in FIELDS:
        assert isinstance(result[field], da.Array), field
        assert result[field].chunks[0] == X_dask.chunks[0], field
    computed = dict(
        zip(FIELDS, dask.compute(*(result[f] for f in FIELDS)), strict=True)
    )
    for field in FIELDS:
        np.testing.assert_array_equal(computed[field], expected[field], err_msg=field)
    for method in methods:
        args = (0.2,) if method == "predict_set" else ()
        lazy = getattr(dask_model, method)(X_dask, *args)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == X_dask.chunks[0], method
        np.testing.assert_array_equal(
            lazy.compute(), getattr(numpy_model, method)(X, *args), err_msg=method
        )


def test_dask_arrays_without_a_cluster(tmp_path):
    # no distributed client yet (this test runs before the module's cluster):
    # Dask's local scheduler computes the activations and the searches
    with pytest.raises(ValueError):
        distributed.default_client()
    X, y = _images()
    # blocks of 37 rows: they align with neither batch_size=48 nor the split
    X_dask = da.from_array(X, chunks=(37, 1, 8, 8))
    model = _image_dknn(p_value="smoothed").fit(X_dask, da.from_array(y, chunks=50))
    reference = _image_dknn(p_value="smoothed").fit(X, y)
    _assert_same_model(model, reference)
    _assert_same_outputs(model, reference, X_dask[:130], X[:130])
    with_neighbors = model.predict_with_credibility(X_dask[:130], return_neighbors=True)
    expected = reference.predict_with_credibility(X[:130], return_neighbors=True)
    for field in ("neighbors", "distances"):
        assert isinstance(with_neighbors[field], da.Array)
        np.testing.assert_array_equal(with_neighbors[field].compute(), expected[field])
    assert model.score(X_dask, y) == reference.score(X, y)
    # the activation cache keys arrays in memory: not used, and said so
    with pytest.warns(UserWarning, match="memory= .* not used for a dask array"):
        cached = _image_dknn(memory=str(tmp_path)).fit(X_dask, y)
    np.testing.assert_array_equal(
        cached.calibration_nonconformity_,
        _image_dknn().fit(X, y).calibration_nonconformity_,
    )


# ---------------------------------------------------------------------------------
# ShardedBackend on the workers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_sharded_exact_equals_exact(client, metric):
    X, Q = _data()
    exact = ExactBackend(n_neighbors=9, metric=metric).fit(X)
    sharded = ShardedBackend(n_neighbors=9, metric=metric, timeout=TIMEOUT).fit(X)
    # one shard per worker, each on its own worker
    assert sharded.n_shards_ == 2
    holders = client.who_has(sharded._shards)
    assert len({holders[f.key][0] for f in sharded._shards}) == 2
    for query in (Q, X[:150], None):
        _assert_same(sharded.kneighbors(query), exact.kneighbors(query))
    three = ShardedBackend(
        "exact", 3, n_neighbors=9, metric=metric, timeout=TIMEOUT
    ).fit(X)
    _assert_same(three.kneighbors(Q), exact.kneighbors(Q))
    _assert_same(three.kneighbors(), exact.kneighbors())


@pytest.fixture(scope="module")
def dknn():
    """A DkNN (MLP) with the exact backend, and its data."""
    X, y = make_classification(
        n_samples=420, n_features=10, n_informative=6, n_classes=3, random_state=0
    )
    X = X.astype(np.float32)
    params = dict(n_neighbors=7, calibration_size=60, max_epochs=3, random_state=0)
    return DeepKNNClassifier(**params).fit(X[:360], y[:360]), X, y


def _with_backend(clf, backend):
    """The same network, split and layers, another backend."""
    return clone(clf).set_params(net=FrozenEstimator(clf.net_), backend=backend)


def test_sharded_classifier_equals_exact(client, dknn):
    clf, X, y = dknn
    sharded = _with_backend(clf, ShardedBackend(timeout=TIMEOUT)).fit(X[:360], y[:360])
    assert all(b._distributed and b.n_shards_ == 2 for b in sharded.backends_)
    Q = X[360:]
    _assert_same(sharded.kneighbors(Q), clf.kneighbors(Q))
    np.testing.assert_array_equal(sharded.predict(Q), clf.predict(Q))
    np.testing.assert_array_equal(sharded.credibility(Q), clf.credibility(Q))
    np.testing.assert_array_equal(sharded.p_values(Q), clf.p_values(Q))


@pytest.mark.parametrize(
    "inner",
    [
        FaissBackend(index="ivf", random_state=0),
        AnnoyBackend(n_trees=5, random_state=0),
    ],
    ids=["faiss-ivf", "annoy"],
)
def test_sharded_approximate_recall(client, inner):
    rng = np.random.default_rng(1)
    centers = rng.normal(scale=4, size=(20, 16))
    X = centers[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 16))
    Q = centers[rng.integers(0, 20, 200)] + rng.normal(size=(200, 16))
    _, ref = ExactBackend(n_neighbors=25).fit(X).kneighbors(Q)

    def recall(ind):
        shared = [np.intersect1d(a, b).size for a, b in zip(ind, ref, strict=True)]
        return np.mean(shared) / 25

    one = clone(inner).set_params(n_neighbors=25).fit(X).kneighbors(Q)[1]
    sharded = ShardedBackend(inner, n_neighbors=25, timeout=TIMEOUT).fit(X)
    assert sharded._distributed
    two = sharded.kneighbors(Q)[1]
    print(f"recall@25 unsharded {recall(one):.4f}, 2 shards {recall(two):.4f}")
    assert recall(two) >= recall(one) - 0.01


def test_fit_on_a_dask_array_of_rows(client):
    # the rows are computed on the workers and never gathered on the client
    X, Q = _data(seed=2)
    rows = da.from_array(X, chunks=(250, 6))  # chunked across rows and columns
    sharded = ShardedBackend("exact", 3, n_neighbors=6, timeout=TIMEOUT).fit(rows)
    assert sharded.n_features_in_ == 12 and sharded.n_samples_fit_ == len(X)
    exact = ExactBackend(n_neighbors=6).fit(X)
    _assert_same(sharded.kneighbors(Q), exact.kneighbors(Q))
    _assert_same(sharded.kneighbors(), exact.kneighbors())
    # cosine: the blocks normalised on the workers in float32 as ExactBackend
    # normalises them; n_shards=None: one shard per worker
    X = X * np.arange(1, len(X) + 1)[:, None] ** 0.5  # norms differ
    rows = da.from_array(X, chunks=(250, 6))
    cosine = ShardedBackend(n_neighbors=6, metric="cosine", timeout=TIMEOUT).fit(rows)
    assert cosine.n_shards_ == 2
    exact = ExactBackend(n_neighbors=6, metric="cosine").fit(X)
    _assert_same(cosine.kneighbors(Q), exact.kneighbors(Q))
    _assert_same(cosine.kneighbors(), exact.kneighbors())
    bad = da.from_array(np.full((10, 3), np.nan), chunks=5)
    with pytest.raises(ValueError, match="NaN"):
        ShardedBackend("exact", 2, timeout=TIMEOUT).fit(bad)


def test_fewer_rows_than_workers_and_empty_rows(client):
    # n_shards=None means one shard per worker, as far as there are rows: one row
    # on 2 workers once failed with "n_shards=2 exceeds ..." though none was given
    X, Q = _data(seed=5)
    for rows in (X[:1], da.from_array(X[:1], chunks=1)):
        sharded = ShardedBackend(n_neighbors=1, timeout=TIMEOUT).fit(rows)
        assert sharded.n_shards_ == 1
        np.testing.assert_array_equal(sharded.kneighbors(Q)[1], np.zeros((100, 1)))
    # an empty dask array gets the message of an empty numpy array
    expected = (
        "Found array with 0 sample(s) (shape=(0, 12)) while a minimum of 1 is "
        "required by ShardedBackend."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        ShardedBackend(timeout=TIMEOUT).fit(da.from_array(X[:0], chunks=5))


def test_timeout_names_the_pending_shards(client):
    X, Q = _data(seed=3)
    sharded = ShardedBackend(n_neighbors=3, timeout=TIMEOUT).fit(X)
    sharded.set_params(timeout=1e-6)
    with pytest.raises(TimeoutError, match=r"timeout=1e-06 s from shard \d of 2"):
        sharded.kneighbors(Q)


def test_joblib_round_trip_and_scatter_again(client, tmp_path):
    X, Q = _data(seed=4)
    sharded = ShardedBackend(n_neighbors=5, client=client, timeout=TIMEOUT).fit(X)
    expected = sharded.kneighbors(Q), sharded.kneighbors()
    joblib.dump(sharded, tmp_path / "sharded.joblib")
    assert sharded._distributed  # dumping gathers copies, the shards stay
    loaded = joblib.load(tmp_path / "sharded.joblib")
    assert loaded.client is None and not loaded._distributed
    _assert_same(loaded.kneighbors(Q), expected[0])  # in local threads
    loaded.scatter(client)
    assert loaded._distributed
    holders = client.who_has(loaded._shards)
    assert len({holders[f.key][0] for f in loaded._shards}) == 2
    _assert_same(loaded.kneighbors(Q), expected[0])
    _assert_same(loaded.kneighbors(), expected[1])
    loaded.gather()
    assert not loaded._distributed
    _assert_same(loaded.kneighbors(Q), expected[0])
    # scatter(client) uses the client given, not the default one; scatter() the
    # default one
    with distributed.Client(
        client.cluster, set_as_default=False, timeout=TIMEOUT
    ) as other:
        assert loaded.scatter(other)._client is other
        _assert_same(loaded.kneighbors(Q), expected[0])
        loaded.gather()
    assert loaded.scatter()._client is client
    _assert_same(loaded.kneighbors(Q), expected[0])


def _holders(client, sharded):
    """The workers holding each shard."""
    who_has = client.who_has(sharded._shards)
    return [list(who_has[shard.key]) for shard in sharded._shards]


def test_shards_go_round_robin_to_the_workers(client):
    # three shards of identical rows on two workers: shard i on the (i mod 2)-th
    # worker (sorted), at every fit and every scatter, and three shards, not
    # one shared by content. Dask's scatter places data round robin too, but from
    # where its counter stands: twice each, so that a placement left to it shows
    rng = np.random.default_rng(7)
    X = np.tile(rng.normal(size=(60, 12)), (3, 1))
    Q = rng.normal(size=(20, 12))
    workers = sorted(client.nthreads())
    expected = [[workers[i % 2]] for i in range(3)]
    exact = ExactBackend(n_neighbors=4).fit(X).kneighbors(Q)
    for _ in range(2):
        sharded = ShardedBackend(n_shards=3, n_neighbors=4, timeout=TIMEOUT).fit(X)
        assert _holders(client, sharded) == expected
        assert len({shard.key for shard in sharded._shards}) == 3
    _assert_same(sharded.kneighbors(Q), exact)
    for _ in range(2):
        sharded.gather().scatter(client)
        assert _holders(client, sharded) == expected
        assert len({shard.key for shard in sharded._shards}) == 3
    _assert_same(sharded.kneighbors(Q), exact)


def test_timeouts_name_every_pending_shard(client):
    # shards whose fit waits for this test's signal: a fit, and a gather or a pickle
    # of shards still being computed, wait at most `timeout` and name them all
    fitted, computed = (f"skdknn-test-{uuid.uuid4().hex}" for _ in range(2))

    class Held(ExactBackend):
        def _build(self, X):
            distributed.Event(fitted).wait(TIMEOUT)
            super()._build(X)

    def held(shard):
        distributed.Event(computed).wait(TIMEOUT)
        return shard

    X, Q = _data(seed=8)
    pending = "shard 0 of 2 (rows 0 to 564), shard 1 of 2 (rows 565 to 1128)"
    message = "ShardedBackend: no answer within timeout=0.5 s from " + pending + "."
    message = f"^{re.escape(message)}$"
    try:
        with pytest.raises(TimeoutError, match=message):
            ShardedBackend(Held(), 2, n_neighbors=3, timeout=0.5).fit(X)
    finally:
        distributed.Event(fitted).set()
    sharded = ShardedBackend(n_shards=2, n_neighbors=3, timeout=TIMEOUT).fit(X)
    expected = sharded.kneighbors(Q)
    sharded.set_params(timeout=0.5)
    try:
        # stands for shards that the scheduler is still computing
        sharded._shards = [client.submit(held, s, pure=False) for s in sharded._shards]
        with pytest.raises(TimeoutError, match=message):
            sharded.gather()
        with pytest.raises(TimeoutError, match=message):
            pickle.dumps(sharded)
    finally:
        distributed.Event(computed).set()
    sharded.set_params(timeout=TIMEOUT)
    _assert_same(sharded.gather().kneighbors(Q), expected)


def test_delayed_queries_answer_as_kneighbors(client):
    # the classifier's tasks on dask arrays of queries: k, the metric and
    # return_distance as kneighbors takes them, shards smaller than the default k
    from dask import delayed

    rng = np.random.default_rng(9)
    X = rng.normal(size=(19, 5)) * np.arange(1, 20)[:, None]  # norms differ
    Q = rng.normal(size=(8, 5))
    sharded = ShardedBackend(n_neighbors=12, metric="cosine", timeout=TIMEOUT).fit(X)
    assert sharded.n_shards_ == 2 and max(np.diff(sharded.shard_bounds_)) < 12
    exact = ExactBackend(n_neighbors=12, metric="cosine").fit(X)
    (dist, ind), expected = (
        sharded._kneighbors_delayed(delayed(Q), 4, True).compute(),
        exact.kneighbors(Q, 4),
    )
    np.testing.assert_array_equal(ind, expected[1])
    # BLAS computes a shard of 10 rows with other kernels than 19: the last bit
    np.testing.assert_allclose(dist, expected[0], rtol=1e-5)
    lazy = sharded._kneighbors_delayed(delayed(Q), 4, False)
    np.testing.assert_array_equal(lazy.compute(), exact.kneighbors(Q, 4)[1])


def test_fit_on_dask_arrays_shards_each_array_with_the_client(client):
    from skdknn.neighbors._sharded import fit_on_dask_arrays

    X, Q = _data(seed=10)
    layers = [X, X[:, :5] * 2]
    given = []

    def arrays(c):
        given.append(c)
        return [da.from_array(rows, chunks=300) for rows in layers]

    template = ShardedBackend(n_neighbors=4, timeout=TIMEOUT)
    backends = fit_on_dask_arrays(template, arrays)
    assert given == [client]
    for backend, rows in zip(backends, layers, strict=True):
        assert backend is not template and backend.n_shards_ == 2
        queries = Q[:, : rows.shape[1]]
        expected = ExactBackend(n_neighbors=4).fit(rows).kneighbors(queries)
        _assert_same(backend.kneighbors(queries), expected)


def test_queries_are_sent_once_not_with_every_task(client):
    # a block of queries is scattered once, then copied to the shards' workers:
    # embedded in each search task, it made a "large graph" per shard
    rng = np.random.default_rng(11)
    X, Q = rng.normal(size=(100, 16)), rng.normal(size=(2000, 16))  # 128 kB
    sharded = ShardedBackend(n_neighbors=3, timeout=TIMEOUT).fit(X)
    threshold = {"distributed.admin.large-graph-warning-threshold": "32kB"}
    with dask.config.set(threshold), warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = sharded.kneighbors(Q)
    _assert_same(answer, ExactBackend(n_neighbors=3).fit(X).kneighbors(Q))


def test_a_failed_search_task_is_retried_once(client):
    # a shard's search that fails once (a transient error on its worker) is run
    # again; one that fails again raises its error
    def flaky(failures):
        class Flaky(ExactBackend):
            def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
                self.calls_ = getattr(self, "calls_", 0) + 1
                if self.calls_ <= failures:
                    raise OSError(f"transient failure {self.calls_}")
                return super().kneighbors(X, n_neighbors, return_distance)

        return Flaky()

    rng = np.random.default_rng(12)
    X, Q = rng.normal(size=(60, 6)), rng.normal(size=(10, 6))
    once = ShardedBackend(flaky(1), 2, n_neighbors=3, timeout=TIMEOUT).fit(X)
    _assert_same(once.kneighbors(Q), ExactBackend(n_neighbors=3).fit(X).kneighbors(Q))
    twice = ShardedBackend(flaky(2), 2, n_neighbors=3, timeout=TIMEOUT).fit(X)
    with pytest.raises(OSError, match=r"^transient failure 2$"):
        twice.kneighbors(Q)


# ---------------------------------------------------------------------------------
# Dask arrays in, dask arrays out; searches over the cluster
# ---------------------------------------------------------------------------------
def test_blockwise_predictions_and_attack(client, dknn):
    from skdknn.parallel import blockwise

    clf, X, _ = dknn
    Q = da.from_array(X[360:], chunks=25)
    for method in ("predict", "credibility", "p_values", "predict_set"):
        result = blockwise(clf, method, Q)
        assert isinstance(result, da.Array) and result.chunks[0] == (25, 25, 10)
        np.testing.assert_array_equal(result.compute(), getattr(clf, method)(X[360:]))
    box = dict(clip_min=float(X.min()), clip_max=float(X.max()))
    attack = FGSMAttack(clf, eps=0.2, **box).fit(X[:360])
    adversarial = blockwise(attack, "transform", Q)
    np.testing.assert_array_equal(adversarial.compute(), attack.transform(X[360:]))


@pytest.mark.parametrize(
    "backend", ["exact", ShardedBackend(timeout=TIMEOUT)], ids=["exact", "sharded"]
)
def test_dknn_on_dask_arrays_equals_numpy(client, backend, monkeypatch):
    X, y = _images(seed=1)
    X_dask = da.from_array(X, chunks=(37, 1, 8, 8))
    if isinstance(backend, ShardedBackend):
        # the activations go from the workers into the shards: a fit through the
        # client (the numpy path: rows streamed here, then scattered) would fail
        def gathered(*args, **kwargs):
            raise AssertionError("full-width activations gathered on the client")

        monkeypatch.setattr(ShardedBackend, "_finish_stream", gathered)
    model = _image_dknn(backend=backend, p_value="smoothed").fit(X_dask, y)
    monkeypatch.undo()
    reference = _image_dknn(backend=backend, p_value="smoothed").fit(X, y)
    if isinstance(backend, ShardedBackend):
        assert all(b._distributed and b.n_shards_ == 2 for b in model.backends_)
    _assert_same_model(model, reference)
    # queries chunked unlike the fit and unlike batch_size, a short last block (the
    # other methods read a field of the one-pass method: tested without a cluster)
    queries = da.from_array(X, chunks=(61, 1, 8, 8))
    _assert_same_outputs(
        model, reference, queries, X, methods=("predict_proba", "predict_set")
    )
    # the same model on numpy queries (sharded: the same shards) answers the same
    np.testing.assert_array_equal(model.predict(X), reference.predict(X))


def test_dask_arrays_bad_inputs_get_clear_errors(client, dknn):
    X, y = _images(n=120)
    X_dask = da.from_array(X, chunks=40)
    clf = _image_dknn()
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        clf.fit(X_dask[X_dask[:, 0, 0, 0] > 0], y)
    with pytest.raises(ValueError, match=r"shape \(120,\)"):
        clf.fit(da.from_array(X[:, 0, 0, 0], chunks=40), y)
    with pytest.raises(ValueError, match=r"shape \(120, 1, 1, 8, 8\)"):
        clf.fit(X_dask[:, None], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X_dask, y[:100])
    bad = X.copy()
    bad[77, 0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(da.from_array(bad, chunks=40), y)
    with pytest.raises(TypeError, match="numeric"):
        clf.fit(da.from_array(X.astype(str), chunks=40), y)
    fitted, X_rows, _ = dknn  # fitted on flat rows of 10 features
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        fitted.predict(
            da.from_array(X_rows, chunks=50)[da.from_array(X_rows)[:, 0] > 0]
        )
    with pytest.raises(ValueError, match="is expecting 10 features"):
        fitted.predict(da.from_array(X_rows[:, :7], chunks=50))
    with pytest.raises(ValueError, match=r"shape \(420,\)"):
        fitted.predict(da.from_array(X_rows[:, 0], chunks=50))


def test_grid_search_on_the_dask_backend_equals_local(client, dknn):
    clf, X, y = dknn
    prefit = _with_backend(clf, "exact")
    grid = {"n_neighbors": [3, 9], "metric": ["euclidean", "cosine"]}
    local = GridSearchCV(prefit, grid, cv=2).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(prefit, grid, cv=2, n_jobs=-1).fit(X, y)
    for key in ("mean_test_score", "split0_test_score", "split1_test_score"):
        np.testing.assert_array_equal(remote.cv_results_[key], local.cv_results_[key])
    assert remote.best_params_ == local.best_params_


def test_grid_search_of_sharded_backends_on_the_dask_backend(client, dknn):
    # each candidate's fit runs in a task on a worker; its ShardedBackend used
    # to submit its shards to the same cluster and wait for them while holding
    # the worker's only thread: the search hung forever (timeout=None)
    clf, X, y = dknn
    prefit = _with_backend(clf, ShardedBackend(n_shards=2, timeout=TIMEOUT))
    grid = {"n_neighbors": [3, 9]}
    local = GridSearchCV(_with_backend(clf, "exact"), grid, cv=2).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(prefit, grid, cv=2, n_jobs=-1).fit(X, y)
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )
    # inside a task on a worker there is no client to submit to
    assert client.submit(active_client, pure=False).result(TIMEOUT) is None
    assert active_client() is client


def test_failed_dask_refit_keeps_the_fitted_model(client):
    X, Q = _data(seed=4)
    sharded = ShardedBackend("exact", 2, n_neighbors=3, timeout=TIMEOUT).fit(X)
    before = sharded.kneighbors(Q)
    bad = np.array(X[:, :5])
    bad[7, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        sharded.fit(da.from_array(bad, chunks=100))
    # the old model answers as before (it raised ShardLostError, or expected 5
    # features, after the failed refit)
    assert sharded.n_features_in_ == X.shape[1]
    _assert_same(sharded.kneighbors(Q), before)


def test_complex_and_unknown_width_dask_arrays_are_refused(client, dknn):
    X, _ = _data(seed=5)
    complex_rows = da.from_array(X + 1j, chunks=300)
    expected = "Complex data not supported; ShardedBackend got dtype complex128."
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        ShardedBackend("exact", 2, timeout=TIMEOUT).fit(complex_rows)
    clf, X_images, _ = dknn
    images = da.from_array(X_images[:20] + 5j, chunks=10)
    with pytest.raises(ValueError, match="Complex data not supported"):
        clf.predict(images)
    unknown = da.from_array(X, chunks=300)
    unknown._chunks = ((300, 300, 300, 229), (np.nan,))
    expected = (
        "Expected a 2-dimensional dask array with known chunk sizes; got shape "
        "(1129, nan) (call X.compute_chunk_sizes() first)."
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        ShardedBackend("exact", 2, timeout=TIMEOUT).fit(unknown)


def test_fit_on_a_dask_array_whose_index_rows_fit_one_batch():
    # the first forward batch held every indexed row: streaming "the rest" from
    # the end cut the dask array into an empty chunk tuple and crashed
    X, y = _images()
    X_dask = da.from_array(X, chunks=(100, 1, 8, 8))
    params = dict(batch_size=len(X))
    model = _image_dknn(**params).fit(X_dask, y)
    _assert_same_model(model, _image_dknn(**params).fit(X, y))


def test_closed_client_is_named_in_the_error(client):
    # the shards live as long as the client that holds them: closing it is not
    # a lost worker, and the error says so
    X, Q = _data(seed=6)
    with distributed.Client(client.cluster, timeout=TIMEOUT) as other:
        sharded = ShardedBackend(n_neighbors=3, client=other, timeout=TIMEOUT).fit(X)
    with pytest.raises(ShardLostError, match=r"client .* is closed") as error:
        sharded.kneighbors(Q)
    assert "worker" not in str(error.value)


# ---------------------------------------------------------------------------------
# Workers lost between fit and predict (gracefully, then abruptly), each on a
# cluster of its own: the other tests keep both workers, in any order
# ---------------------------------------------------------------------------------
@pytest.fixture
def own_client():
    with (
        _cluster() as cluster,
        distributed.Client(cluster, timeout=TIMEOUT, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=TIMEOUT)
        yield client


def _worker_holding(client, backend, shard=0):
    return client.who_has(backend._shards)[backend._shards[shard].key][0]


_NOT_THE_DEFAULT = """
import distributed, numpy as np
from skdknn.neighbors import ExactBackend, ShardedBackend
X = np.random.default_rng(0).normal(size=(300, 6))
with (
    distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                             dashboard_address=None) as cluster,
    distributed.Client(cluster, set_as_default=False) as client,
):
    sharded = ShardedBackend(n_shards=2, n_neighbors=5, client=client, timeout=60)
    got = sharded.fit(X).kneighbors(X[:40] + 0.01)
    held = any(client.has_what().values())  # the shards are on this client's cluster
    expected = ExactBackend(n_neighbors=5).fit(X).kneighbors(X[:40] + 0.01)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    print("shards:", sharded.n_shards_, "held by this client's workers:", held)
"""


def test_a_client_that_is_not_the_default_is_the_one_waited_on():
    # ShardedBackend(client=c) with c made with set_as_default=False, in a process
    # with no default client: before, fit raised "No clients found"
    # (distributed.wait waits through the default client). A process of its own:
    # in this one the module's client is the default.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _NOT_THE_DEFAULT],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shards: 2 held by this client's workers: True" in result.stdout


def test_retired_worker_hands_its_shards_over(own_client, dknn):
    # a worker closed gracefully moves its data to the others: the answer stays
    clf, X, y = dknn
    backend = ShardedBackend(n_shards=2, client=own_client, timeout=TIMEOUT)
    sharded = _with_backend(clf, backend).fit(X[:360], y[:360])
    address = _worker_holding(own_client, sharded.backends_[0])
    own_client.retire_workers([address], close_workers=True)
    np.testing.assert_array_equal(sharded.predict(X[360:]), clf.predict(X[360:]))


def test_killed_worker_is_a_clear_error(own_client, dknn):
    clf, X, y = dknn
    backend = ShardedBackend(n_shards=2, client=own_client, timeout=TIMEOUT)
    sharded = _with_backend(clf, backend).fit(X[:360], y[:360])
    # one worker retires (its shards move to the other), then the last one dies
    # with both shards, no goodbye: the error names them
    address = _worker_holding(own_client, sharded.backends_[0])
    own_client.retire_workers([address], close_workers=True)
    last = _worker_holding(own_client, sharded.backends_[0])
    cluster = own_client.cluster
    (worker,) = [w for w in cluster.workers.values() if w.worker_address == last]
    # a nanny's process is killed; a worker thread (THREADS) is closed without
    # handing its data over: either way the scheduler loses both shards
    cluster.sync(worker.close if THREADS else worker.kill)
    match = r"shard 0 of 2 \(rows 0 to \d+\), shard 1 of 2 .* were lost"
    with pytest.raises(ShardLostError, match=match):
        sharded.predict(X[360:])


@pytest.mark.slow
def test_docs_example_runs():
    # docs/scaling-out.md's session, in a process of its own (its own cluster)
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs/_examples/scaling_out.py"
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same neighbours as one process: True" in result.stdout
    assert "same distances, to float32 rounding: True" in result.stdout


def test_the_workers_are_counted_whatever_the_client_refresh_does():
    # client.scheduler_info() returns the client's cached identity, which its
    # periodic refresh (every distributed.client.scheduler-info-interval, 2 s by
    # default) replaces, from the event-loop thread, with one that lists no worker:
    # a fit that read it in between refused a 2-worker cluster ("has no workers",
    # seen once in CI) or, with n_shards=None, made 0 -> 1 shard. A 1 ms refresh
    # makes the window wide: before the fix, 30 fits failed in 3 of 3 runs.
    X = np.random.default_rng(0).normal(size=(40, 3))
    expected = ExactBackend(n_neighbors=3).fit(X).kneighbors(X[:5])
    with (
        dask.config.set({"distributed.client.scheduler-info-interval": "1ms"}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as own,
    ):
        own.wait_for_workers(2, timeout=TIMEOUT)
        for _ in range(30):
            for n_shards in (None, 2):
                sharded = ShardedBackend(
                    n_shards=n_shards, n_neighbors=3, client=own, timeout=TIMEOUT
                ).fit(X)
                assert sharded.n_shards_ == 2
                _assert_same(sharded.kneighbors(X[:5]), expected)


def test_a_closed_or_asynchronous_client_is_a_clear_error():
    # before: AttributeError "'NoneType' object has no attribute 'ncores'" for a
    # closed client, and "'coroutine' object is not iterable" for an asynchronous
    # one (earlier still: "has no workers" for both)
    import asyncio

    X = np.random.default_rng(0).normal(size=(20, 3))
    with distributed.LocalCluster(
        n_workers=1, processes=False, dashboard_address=None
    ) as cluster:
        closed = distributed.Client(cluster, set_as_default=False)
        closed.close()
        with pytest.raises(RuntimeError, match="is closed: it reaches no scheduler"):
            ShardedBackend(n_shards=2, n_neighbors=2, client=closed).fit(X)

        async def fit_with_an_asynchronous_client():
            async with distributed.Client(
                cluster.scheduler_address, asynchronous=True, set_as_default=False
            ) as client:
                ShardedBackend(n_shards=2, n_neighbors=2, client=client).fit(X)

        with pytest.raises(TypeError, match="is asynchronous"):
            asyncio.run(fit_with_an_asynchronous_client())
