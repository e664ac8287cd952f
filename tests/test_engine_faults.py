"""Engines that misbehave: short, padded, repeated or non-finite answers are answered
again exactly (one check in NeighborsBackend for every backend), and duplicate-heavy
data (dead ReLU rows) keep exact distances and a recall like that of distinct data."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from skdknn.neighbors import (
    AnnoyBackend,
    ExactBackend,
    FaissBackend,
    LSHBackend,
    NeighborsBackend,
    ProjectedBackend,
    PyNNDescentBackend,
    _duplicates,
)
from skdknn.neighbors._duplicates import duplicate_groups, expand_groups

K = 5


def _data(seed=0, n=300, d=8, n_queries=40):
    """Six clusters in a 5-dimensional subspace of d dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5, size=(6, 5))
    X = centers[rng.integers(0, 6, n)] + rng.normal(size=(n, 5))
    Q = centers[rng.integers(0, 6, n_queries)] + rng.normal(size=(n_queries, 5))
    embed = rng.normal(size=(5, d))
    return (X @ embed).astype(np.float32), (Q @ embed).astype(np.float32)


# ---------------------------------------------------------------------------------
# Simulated faulty engines
# ---------------------------------------------------------------------------------
def _corrupt(ind, dist, mode):
    """One query's answer (lists or 1-d arrays, nearest first) made faulty."""
    ind, dist = list(ind), list(dist)
    if mode == "one id":
        return ind[:1], dist[:1]
    if mode == "three ids":
        return ind[:3], dist[:3]
    if mode == "padded":
        return [*ind[:-2], -1, -1], [*dist[:-2], np.inf, np.inf]
    if mode == "repeated":
        return [ind[0]] * len(ind), [dist[0]] * len(dist)
    if mode == "nan":
        return ind, [*dist[:-1], np.nan]
    if mode == "out of range":
        return [*ind[:-1], 10**6], dist
    raise AssertionError(mode)


def _corrupt_rows(ind, dist, mode):
    """A block's (n, k) answer with every even row made faulty (ragged: padded)."""
    rows = [
        _corrupt(i, d, mode) if r % 2 == 0 else (list(i), list(d))
        for r, (i, d) in enumerate(zip(ind, dist, strict=True))
    ]
    width = min(len(i) for i, _ in rows)
    # an engine returning a fixed-width array cuts every row to the same width
    return (
        np.array([i[:width] for i, _ in rows]),
        np.array([d[:width] for _, d in rows], dtype=np.float32),
    )


class _Proxy:
    """Delegates to a real engine, except for the methods given."""

    def __init__(self, engine, **methods):
        self._engine = engine
        self.__dict__.update(methods)

    def __getattr__(self, name):
        return getattr(self._engine, name)


def _break_annoy(backend, mode):
    index = backend._index

    def wrap(get):
        def faulty(query, n, search_k=-1, include_distances=False):
            ind, dist = get(query, n, search_k, True)
            return _corrupt(ind, dist, mode)

        return faulty

    backend._index = _Proxy(
        index,
        get_nns_by_vector=wrap(index.get_nns_by_vector),
        get_nns_by_item=wrap(index.get_nns_by_item),
    )


def _break_pynndescent(backend, mode):
    index = backend._index

    def query(X, k, epsilon=0.1):
        ind, dist = index.query(X, k=k, epsilon=epsilon)
        return _corrupt_rows(ind, dist, mode)

    backend._index = _Proxy(index, query=query)


def _break_faiss(backend, mode):
    index = backend._index

    def search(X, k):
        sq_dist, ind = index.search(X, k)
        ind, sq_dist = _corrupt_rows(ind, sq_dist, mode)
        return sq_dist, ind

    backend._index = _Proxy(index, search=search)


def _break_own_engine(backend, mode, method):
    original = getattr(backend, method)

    def faulty(X, k):
        dist, ind = original(X, k)
        ind, dist = _corrupt_rows(ind, dist, mode)
        return dist, ind

    setattr(backend, method, faulty)


def _break_projected(backend, mode):
    _break_annoy(backend.backend_, mode)


BREAK = {
    "annoy": (AnnoyBackend(n_neighbors=K, n_trees=5, random_state=0), _break_annoy),
    "pynndescent": (
        PyNNDescentBackend(n_neighbors=K, random_state=0),
        _break_pynndescent,
    ),
    "faiss-flat": (FaissBackend(n_neighbors=K), _break_faiss),
    "faiss-ivf": (
        FaissBackend(n_neighbors=K, index="ivf", random_state=0),
        _break_faiss,
    ),
    "lsh": (
        LSHBackend(n_neighbors=K, random_state=0),
        lambda b, m: _break_own_engine(b, m, "_search"),
    ),
    "exact": (
        ExactBackend(n_neighbors=K),
        lambda b, m: _break_own_engine(b, m, "_search"),
    ),
    "projected": (
        ProjectedBackend("annoy", n_components=8, n_neighbors=K, random_state=0),
        _break_projected,
    ),
}
MODES = ["one id", "three ids", "padded", "repeated", "nan", "out of range"]


@pytest.fixture(scope="module")
def fitted_backends():
    X, Q = _data()
    return X, Q, {name: clone(b).fit(X) for name, (b, _) in BREAK.items()}


def _assert_answers(dist, ind, X, Q, k, exact_rows, reference=None):
    """Every row holds k distinct valid ids at their true distances; the rows in
    ``exact_rows`` hold the exact k nearest, the others either the unbroken
    engine's answer (``reference`` ids) or the exact one."""
    true = np.sort(np.linalg.norm(Q[:, None] - X[None], axis=2), axis=1)[:, :k]
    assert ind.shape == dist.shape == (Q.shape[0], k)
    assert all(len(set(row)) == k for row in ind)
    assert ((ind >= 0) & (ind < X.shape[0])).all()
    returned = np.linalg.norm(Q[:, None] - X[ind], axis=2)
    np.testing.assert_allclose(dist, returned, rtol=1e-4, atol=1e-4)
    is_exact = np.isclose(np.sort(dist, axis=1), true, rtol=1e-4, atol=1e-4).all(1)
    assert is_exact[exact_rows].all()
    if reference is not None:
        assert (is_exact | (ind == reference).all(axis=1)).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(BREAK))
def test_faulty_engine_answers_are_answered_exactly(fitted_backends, name, mode):
    # before the fix: Annoy broadcast one id over the row (the same id k times) or
    # failed to broadcast three; PyNNDescent and faiss passed repeated or
    # out-of-range ids and NaN distances on to the DkNN counts
    X, Q, fitted = fitted_backends
    backend = copy.deepcopy(fitted[name])
    reference = backend.kneighbors(Q)[1], backend.kneighbors()[1]
    BREAK[name][1](backend, mode)
    faulty = mode in ("repeated", "nan", "out of range")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist, ind = backend.kneighbors(Q)
        self_dist, self_ind = backend.kneighbors()
    if name == "projected":  # distances between projected rows (none projected)
        X, Q = backend.backend_._fitted_rows(), backend._project(Q)
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    if faulty:
        assert any("answered again by exact search" in m for m in messages)
    else:
        assert not messages  # short answers are a documented engine behaviour
    # the even rows are broken (every row when the engine cuts all rows short)
    every = name in ("annoy", "projected") or mode in ("one id", "three ids")
    broken = np.arange(Q.shape[0]) % (1 if every else 2) == 0
    _assert_answers(dist, ind, X, Q, K, broken, reference[0])
    # the indexed rows themselves, each excluded from its own neighbours
    assert not (self_ind == np.arange(X.shape[0])[:, None]).any()
    assert all(len(set(row)) == K for row in self_ind)
    for i in range(0, X.shape[0], 50):  # a few rows against the others
        others = np.delete(np.arange(X.shape[0]), i)
        _assert_answers(
            self_dist[i : i + 1],
            np.searchsorted(others, self_ind[i : i + 1]),
            X[others],
            X[i : i + 1],
            K,
            np.array([every]),
            np.searchsorted(others, reference[1][i : i + 1]),
        )


class _ShortEngine:
    """A duck-typed backend (fit / kneighbors) that answers 3 of k neighbours."""

    def get_params(self, deep=True):
        return {}

    def set_params(self, **params):
        return self

    def fit(self, X, y=None):
        self._inner = ExactBackend().fit(X)
        return self

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        dist, ind = self._inner.kneighbors(X, n_neighbors)
        return dist[:, :3], ind[:, :3]


def test_short_answer_of_a_backend_without_rows_raises_naming_it():
    X, Q = _data()
    backend = ProjectedBackend(_ShortEngine(), n_components=4, n_neighbors=K).fit(X)
    with pytest.raises(RuntimeError, match=r"ProjectedBackend's engine answered 40 of"):
        backend.kneighbors(Q)


def test_answer_of_the_wrong_shape_raises_naming_the_engine(fitted_backends):
    X, Q, fitted = fitted_backends
    backend = copy.deepcopy(fitted["exact"])
    backend._search = lambda X, k: (np.zeros((3, k)), np.zeros((3, k), dtype=int))
    with pytest.raises(RuntimeError, match=r"ExactBackend's engine .* expected both"):
        backend.kneighbors(Q)


# ---------------------------------------------------------------------------------
# Duplicate-heavy activations
# ---------------------------------------------------------------------------------
def duplicate_heavy(seed=0, n=2000, d=32, n_queries=200, duplicates=True):
    """ReLU activations; with ``duplicates``, half the rows dead (all zero), 40
    points copied 8 times each, 30 % of the queries zero and 40 queries next to a
    copied point."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(d, d))

    def draw(m):
        return np.maximum(rng.normal(size=(m, d)) @ basis * 0.3, 0).astype(np.float32)

    X, Q = draw(n), draw(n_queries)
    if duplicates:
        dead = rng.random(n) < 0.5
        X[dead] = 0
        copied = draw(40)
        X[rng.choice(np.flatnonzero(~dead), 320, replace=False)] = np.repeat(
            copied, 8, axis=0
        )
        Q[rng.random(n_queries) < 0.3] = 0
        Q[:40] = copied + rng.normal(scale=0.01, size=copied.shape)
    return X, Q


def tie_recall(X, Q, dist, ind, k):
    """Share of returned neighbours within the true k-th distance (ties count), the
    number of queries below half of it, and the largest distance error."""
    true_kth = np.sort(np.linalg.norm(Q[:, None] - X[None], axis=2), axis=1)[:, k - 1]
    returned = np.linalg.norm(Q[:, None] - X[ind], axis=2)
    hit = returned <= true_kth[:, None] * (1 + 1e-5) + 1e-5
    error = float(np.abs(returned - dist).max())
    return float(hit.mean()), int((hit.mean(axis=1) < 0.5).sum()), error


APPROXIMATE = {
    "annoy": AnnoyBackend(n_neighbors=10, random_state=0),
    "pynndescent": PyNNDescentBackend(n_neighbors=10, random_state=0),
    "lsh": LSHBackend(n_neighbors=10, random_state=0),
    "faiss-ivf": FaissBackend(n_neighbors=10, index="ivf", random_state=0),
    "projected-annoy": ProjectedBackend(
        "annoy", n_components=32, n_neighbors=10, random_state=0
    ),
}


@pytest.mark.parametrize("name", sorted(APPROXIMATE))
def test_recall_on_duplicate_heavy_activations(name):
    # before the fix PyNNDescent answered 6 of 200 queries with 10 copies of the
    # zero row (recall < 0.5 on those), the walk trapped in the clique of copies
    recalls = {}
    for duplicates in (False, True):
        X, Q = duplicate_heavy(duplicates=duplicates)
        backend = clone(APPROXIMATE[name]).fit(X)
        dist, ind = backend.kneighbors(Q)
        assert all(len(set(row)) == 10 for row in ind)
        recalls[duplicates], poor, error = tie_recall(X, Q, dist, ind, 10)
        assert error < 1e-4  # the distances are those of the returned rows
        assert poor == 0, f"{poor} queries with recall < 0.5"
        self_ind = backend.kneighbors(n_neighbors=10, return_distance=False)
        assert not (self_ind == np.arange(X.shape[0])[:, None]).any()
    print(
        f"tie-aware recall@10 {name}: distinct {recalls[False]:.3f}, "
        f"duplicate-heavy {recalls[True]:.3f}"
    )
    assert recalls[True] >= min(0.95, recalls[False] - 0.02)


@pytest.mark.parametrize("name", sorted(BREAK))
def test_dead_layer_all_rows_identical(name):
    # a dead ReLU layer: every indexed row is zero, so any k rows are nearest
    X = np.zeros((50, 6), dtype=np.float32)
    backend = clone(BREAK[name][0]).fit(X)
    dist, ind = backend.kneighbors(np.ones((3, 6)))
    assert all(len(set(row)) == K for row in ind) and ind.max() < 50
    np.testing.assert_allclose(dist, np.sqrt(6), rtol=1e-6)
    self_dist, self_ind = backend.kneighbors()
    assert (self_dist == 0).all()
    assert all(i not in row and len(set(row)) == K for i, row in enumerate(self_ind))


def test_duplicate_groups_and_expansion_by_hand():
    X = np.array([[0, 0], [1, 2], [0, -0.0], [1, 2], [3, 3], [0, 0]], np.float32)
    members, starts = duplicate_groups(X)
    # groups in order of first row: {0, 2, 5}, {1, 3}, {4}
    assert members.tolist() == [0, 2, 5, 1, 3, 4] and starts.tolist() == [0, 3, 5, 6]
    assert duplicate_groups(np.eye(3, dtype=np.float32)) is None
    # answers over the 3 distinct rows, expanded to 4 ids each
    ind = np.array([[1, 2, 0], [0, 1, 2]])
    dist = np.array([[1.0, 2, 3], [0, 1, 2]], np.float32)
    d4, i4 = expand_groups(dist, ind, members, starts, 4)
    assert i4.tolist() == [[1, 3, 4, 0], [0, 2, 5, 1]]
    assert d4.tolist() == [[1, 1, 2, 3], [0, 0, 0, 1]]


def test_hash_collisions_are_split_exactly(monkeypatch):
    # every row hashed alike: the comparison must still separate distinct rows
    monkeypatch.setattr(
        _duplicates, "_row_hashes", lambda X: np.zeros(X.shape[0], np.uint64)
    )
    X = np.array([[1, 1], [2, 2], [1, 1], [3, 3]], np.float32)
    members, starts = duplicate_groups(X)
    assert members.tolist() == [0, 2, 1, 3] and starts.tolist() == [0, 2, 3, 4]


# ---------------------------------------------------------------------------------
# Non-finite rows
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BREAK))
def test_rows_beyond_float32_range_are_refused(name):
    # finite in float64, infinite in float32: before, the index held inf (and NaN
    # distances) without a word
    X, Q = _data(n=40)
    X = X.astype(np.float64)
    X[3, 1] = 1e39
    with pytest.raises(ValueError, match="not finite once converted to float32"):
        clone(BREAK[name][0]).fit(X)
    backend = clone(BREAK[name][0]).fit(np.delete(X, 3, axis=0))
    Q = Q.astype(np.float64)
    Q[0, 0] = -1e300
    with pytest.raises(ValueError, match="not finite once converted to float32"):
        backend.kneighbors(Q)


@pytest.mark.parametrize("name", sorted(BREAK))
def test_a_failed_refit_keeps_the_fitted_backend(name):
    # the new rows' attributes stayed over the old index: Annoy then answered the
    # old rows' ids as if they were the new rows' (silently wrong), the others
    # raised errors about shapes they had never been given
    X, Q = _data(n=40)
    backend = clone(BREAK[name][0]).fit(X)
    expected = backend.kneighbors(Q)
    bad = X[:20].astype(np.float64)
    bad[3, 1] = 1e39
    with pytest.raises(ValueError, match="not finite once converted to float32"):
        backend.fit(bad)
    assert backend.n_samples_fit_ == 40
    for got, want in zip(backend.kneighbors(Q), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_every_backend_is_checked():
    # the check lives in the base class: every backend class inherits it unchanged
    for backend, _ in BREAK.values():
        cls = type(backend)
        assert issubclass(cls, NeighborsBackend)
        assert cls.kneighbors is NeighborsBackend.kneighbors
        assert cls._checked_search is NeighborsBackend._checked_search
