"""Approximate and projected neighbour backends: recall against ExactBackend on real
DkNN activations, shared behaviour, scikit-learn checks and DkNN integration."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks

from skdknn import DeepKNNClassifier
from skdknn.datasets import load_mnist
from skdknn.neighbors import (
    BACKENDS,
    AnnoyBackend,
    ExactBackend,
    FaissBackend,
    LSHBackend,
    ProjectedBackend,
    PyNNDescentBackend,
    make_backend,
)

APPROXIMATE = {
    "annoy": AnnoyBackend,
    "faiss": FaissBackend,
    "pynndescent": PyNNDescentBackend,
    "lsh": LSHBackend,
}


def recall(ours, reference):
    """Mean share of each query's reference neighbours that ``ours`` also returns."""
    k = reference.shape[-1]
    shared = [
        np.intersect1d(a, b).size / k
        for a, b in zip(
            ours.reshape(-1, k), reference.reshape(-1, ours.shape[-1]), strict=True
        )
    ]
    return float(np.mean(shared))


# ---------------------------------------------------------------------------------
# Recall@75 on real activations of the DkNN paper CNN
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_dknn():
    """A DkNN (paper CNN, 2 epochs) on 1,500 real MNIST images, 200 queries."""
    X, y = load_mnist(return_X_y=True)
    rows = np.random.default_rng(0).permutation(y.size)
    X, y = X[rows], y[rows]
    clf = DeepKNNClassifier(max_epochs=2, calibration_size=150, random_state=0)
    clf.fit(X[:1500], y[:1500])
    queries = X[1500:1700]
    return clf, X[:1500], y[:1500], queries, clf.kneighbors(queries)[1]


def refit(clf, X, y, backend):
    """The same network, split and layers, another backend."""
    return (
        clone(clf).set_params(net=FrozenEstimator(clf.net_), backend=backend).fit(X, y)
    )


# faiss: see the next test, which also checks that flat search is exact
@pytest.mark.parametrize("name", sorted(set(APPROXIMATE) - {"faiss"}))
def test_recall_at_75_on_real_activations(mnist_dknn, name):
    clf, X, y, queries, exact = mnist_dknn
    backend = APPROXIMATE[name](random_state=0)  # default settings
    approx = refit(clf, X, y, backend)
    _, ind = approx.kneighbors(queries)
    per_layer = [recall(ind[:, layer], exact[:, layer]) for layer in range(4)]
    print(f"recall@75 {name}: {np.round(per_layer, 3)}")
    assert min(per_layer) >= 0.95, per_layer


@pytest.mark.parametrize("index", ["flat", "ivf"])
def test_faiss_recall_at_75_on_real_activations(mnist_dknn, index):
    # flat is exact search; the inverted file at its defaults (sqrt(n) cells, 16
    # probed) on 1,350 points: 34 cells of about 40 points
    clf, X, y, queries, exact = mnist_dknn
    approx = refit(clf, X, y, FaissBackend(index=index, random_state=0))
    _, ind = approx.kneighbors(queries)
    per_layer = [recall(ind[:, layer], exact[:, layer]) for layer in range(4)]
    print(f"recall@75 faiss {index}: {np.round(per_layer, 4)}")
    assert min(per_layer) >= (0.999 if index == "flat" else 0.95), per_layer


@pytest.mark.parametrize("method", ["pca", "random"])
def test_projected_backend_on_real_activations(mnist_dknn, method):
    # 256 components: the two wide layers are projected, the others searched as
    # they are (exactly). PCA keeps most neighbours; a random projection fewer;
    # both keep the DkNN's predictions close to the exact ones.
    clf, X, y, queries, exact = mnist_dknn
    backend = ProjectedBackend(method=method, random_state=0)
    approx = refit(clf, X, y, backend)
    widths = [b.n_components_ for b in approx.backends_]
    assert widths == [256, 256, 128, 10]
    _, ind = approx.kneighbors(queries)
    per_layer = [recall(ind[:, layer], exact[:, layer]) for layer in range(4)]
    print(f"recall@75 projected {method}: {np.round(per_layer, 3)}")
    assert per_layer[2:] == [1.0, 1.0]
    assert min(per_layer[:2]) >= (0.85 if method == "pca" else 0.6)
    agreement = np.mean(approx.predict(queries) == clf.predict(queries))
    assert agreement >= 0.97


# ---------------------------------------------------------------------------------
# Shared behaviour on small data
# ---------------------------------------------------------------------------------
def _data(seed=0, n=300, d=8, n_queries=40):
    """Six clusters in a 5-dimensional subspace of d dimensions."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=5, size=(6, 5))
    X = centers[rng.integers(0, 6, n)] + rng.normal(size=(n, 5))
    Q = centers[rng.integers(0, 6, n_queries)] + rng.normal(size=(n_queries, 5))
    embed = rng.normal(size=(5, d))
    return X @ embed, Q @ embed


def _all_backends():
    return [
        AnnoyBackend(n_neighbors=7, random_state=0),
        PyNNDescentBackend(n_neighbors=7, random_state=0),
        LSHBackend(n_neighbors=7, random_state=0),
        ProjectedBackend("annoy", n_components=5, n_neighbors=7, random_state=0),
        FaissBackend(n_neighbors=7, index="ivf", random_state=0),
        ProjectedBackend(
            FaissBackend(index="ivf"), n_components=5, n_neighbors=7, random_state=0
        ),
    ]


def _ids(backend):
    return type(backend).__name__


@pytest.mark.parametrize("backend", _all_backends(), ids=_ids)
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_high_recall_and_exact_distances(backend, metric):
    X, Q = _data()
    backend = clone(backend).set_params(metric=metric)
    exact = ExactBackend(n_neighbors=7, metric=metric).fit(X)
    dist, ind = backend.fit(X).kneighbors(Q)
    ref_dist, ref_ind = exact.kneighbors(Q)
    assert ind.shape == dist.shape == (40, 7)
    assert ind.dtype == np.intp and dist.dtype == np.float32
    assert (np.diff(dist, axis=1) >= -1e-6).all()  # nearest first
    assert recall(ind, ref_ind) >= 0.95
    if not isinstance(backend, ProjectedBackend):
        # distances are those of the returned points (projected: reduced space)
        Xp = exact._fit_X
        Qp = exact._prepare(Q)
        true = np.linalg.norm(Xp[ind] - Qp[:, None, :], axis=2)
        np.testing.assert_allclose(dist, true, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", _all_backends(), ids=_ids)
def test_self_query_excludes_each_point(backend):
    X, _ = _data(seed=1)
    dist, ind = clone(backend).fit(X).kneighbors()
    _, ref_ind = ExactBackend(n_neighbors=7).fit(X).kneighbors()
    assert ind.shape == (300, 7)
    assert not (ind == np.arange(300)[:, None]).any()
    assert recall(ind, ref_ind) >= 0.9
    graph = clone(backend).fit(X).kneighbors_graph(None)
    assert graph.shape == (300, 300) and graph.nnz == 300 * 7


@pytest.mark.parametrize("backend", _all_backends(), ids=_ids)
def test_same_seed_same_answers_and_threads(backend):
    X, Q = _data(seed=2)
    a = clone(backend).fit(X).kneighbors(Q)[1]
    b = clone(backend).fit(X).kneighbors(Q)[1]
    np.testing.assert_array_equal(a, b)
    # Threads may build Annoy's trees in another order; PyNNDescent's threaded
    # build compiles for half a minute: both left to the recall benchmark.
    if not isinstance(backend, (AnnoyBackend, PyNNDescentBackend)):
        c = clone(backend).set_params(n_jobs=2).fit(X).kneighbors(Q)[1]
        assert recall(c, a) >= 0.95


@pytest.mark.parametrize("name", sorted(APPROXIMATE))
def test_n_neighbors_up_to_n_samples(name):
    # tiny indexes: engines that return too few points fall back to exact search
    X, Q = _data(seed=3, n=12, n_queries=5)
    backend = APPROXIMATE[name](n_neighbors=12, random_state=0).fit(X)
    _, ind = backend.kneighbors(Q)
    assert all(sorted(row) == list(range(12)) for row in ind)
    _, ind = backend.kneighbors(n_neighbors=11)
    assert all(len(set(row)) == 11 and i not in row for i, row in enumerate(ind))


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (AnnoyBackend, {"n_trees": 0}),
        (AnnoyBackend, {"search_k": 0}),
        (PyNNDescentBackend, {"graph_n_neighbors": 1}),
        (PyNNDescentBackend, {"diversify_prob": 2.0}),
        (LSHBackend, {"n_bits": 63}),
        (LSHBackend, {"n_bits": "many"}),
        (LSHBackend, {"n_tables": 0}),
        (FaissBackend, {"index": "hnsw"}),
        (FaissBackend, {"n_lists": 0}),
        (FaissBackend, {"n_probe": 0}),
        (ProjectedBackend, {"method": "svd"}),
        (ProjectedBackend, {"n_components": 0}),
        (ProjectedBackend, {"backend": 3}),
    ],
)
def test_bad_parameters_raise_at_fit(cls, params):
    X, _ = _data()
    backend = cls(**params)  # no validation in __init__
    with pytest.raises(ValueError, match=next(iter(params))):
        backend.fit(X)


def test_unknown_inner_backend_name():
    X, _ = _data()
    with pytest.raises(ValueError, match="Unknown backend 'falconn'"):
        ProjectedBackend("falconn").fit(X)


@pytest.mark.parametrize(
    ("cls", "module", "extra"),
    [
        (AnnoyBackend, "annoy", "annoy"),
        (PyNNDescentBackend, "pynndescent", "pynndescent"),
        (FaissBackend, "faiss", "faiss"),
    ],
)
def test_missing_engine_names_the_extra(monkeypatch, cls, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    X, _ = _data()
    with pytest.raises(ImportError, match=rf'pip install "skdknn\[{extra}\]"'):
        cls().fit(X)


@pytest.mark.parametrize("backend", _all_backends()[:3:2], ids=_ids)
def test_verbose_shows_progress(backend, capsys):
    X, Q = _data(seed=4)
    clone(backend).set_params(verbose=1).fit(X).kneighbors(Q)
    assert "queries" in capsys.readouterr().err


# ---------------------------------------------------------------------------------
# ProjectedBackend
# ---------------------------------------------------------------------------------
def test_projection_of_low_rank_data_is_exact():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 60)) + 3.0
    Q = rng.normal(size=(30, 4)) @ rng.normal(size=(4, 60)) + 3.0
    Q = Q @ np.eye(60)  # queries off the data's subspace too
    ref = ExactBackend(n_neighbors=9).fit(X)
    for samples in (None, 50):  # PCA on all rows or on a subset
        backend = ProjectedBackend(
            n_components=4, n_neighbors=9, pca_samples=samples, random_state=0
        ).fit(X)
        assert backend.components_.shape == (60, 4)
        np.testing.assert_array_equal(
            backend.kneighbors(X[:30])[1], ref.kneighbors(X[:30])[1]
        )
        np.testing.assert_array_equal(backend.kneighbors()[1], ref.kneighbors()[1])


def test_a_projection_does_not_depend_on_the_rows_around(monkeypatch):
    """A float32 product rounds according to its shapes (with MKL on an AVX-512
    CPU, one row alone rounded otherwise than in a block), so a point's projection,
    and its neighbours' distances, depended on the rows projected with it. Rows
    are projected in products of one shape (64 rows, the last block padded): the
    same bits one row at a time, from any offset, and in one call."""
    import skdknn.neighbors._projected as projected

    rng = np.random.default_rng(3)
    X = (rng.normal(size=(300, 2000)) + 0.5).astype(np.float32)
    backend = ProjectedBackend(n_components=64, random_state=0).fit(X)
    whole = backend._project(X)
    ref = X.astype(np.float64) @ backend.components_.astype(np.float64)
    np.testing.assert_allclose(whole, ref, rtol=1e-4, atol=1e-4)
    for i in (0, 1, 63, 64, 299):
        np.testing.assert_array_equal(backend._project(X[i : i + 1]), whole[i : i + 1])
    np.testing.assert_array_equal(backend._project(X[5:137]), whole[5:137])
    # more rows than a block holds: blocks of 7, the same values to rounding
    monkeypatch.setattr(projected, "_PROJECT_ROWS", 7)
    np.testing.assert_allclose(backend._project(X), whole, rtol=1e-4, atol=1e-4)


def test_narrow_layers_are_not_projected():
    X, Q = _data()
    backend = ProjectedBackend(n_components=8, n_neighbors=5).fit(X)
    assert backend.components_ is None and backend.n_components_ == 8
    ref = ExactBackend(n_neighbors=5).fit(X)
    np.testing.assert_array_equal(backend.kneighbors(Q)[1], ref.kneighbors(Q)[1])


def test_inner_backend_is_cloned_and_configured():
    X, _ = _data()
    inner = LSHBackend(n_neighbors=2, metric="cosine", n_tables=5)
    backend = ProjectedBackend(inner, n_components=4, n_neighbors=6, metric="cosine")
    backend.fit(X)
    assert backend.backend_ is not inner and not hasattr(inner, "n_samples_fit_")
    assert backend.backend_.n_neighbors == 6
    assert backend.backend_.metric == "euclidean"  # cosine is applied before
    assert backend.backend_.n_tables == 5
    assert backend.get_params()["backend__n_tables"] == 5


def test_grid_search_reaches_projection_and_inner_parameters():
    X, y = make_classification(
        n_samples=240, n_features=12, n_informative=6, n_classes=3, random_state=0
    )
    clf = DeepKNNClassifier(
        n_neighbors=5,
        calibration_size=30,
        max_epochs=2,
        batch_size=64,
        random_state=0,
        backend=ProjectedBackend(AnnoyBackend(), random_state=0),
    )
    search = GridSearchCV(
        clf,
        {"backend__n_components": [2, 8], "backend__backend__n_trees": [5]},
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    assert best.backends_[0].n_components_ in (2, 8)
    assert isinstance(best.backends_[0].backend_, AnnoyBackend)


# ---------------------------------------------------------------------------------
# DeepKNNClassifier with every backend name
# ---------------------------------------------------------------------------------
def test_registry_names():
    assert {"exact", "annoy", "faiss", "pynndescent", "lsh"} <= set(BACKENDS)


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("faiss-ivf", FaissBackend(index="ivf")),
        ("faiss-flat", FaissBackend(index="flat")),
        (
            "pca128+faiss-ivf",
            ProjectedBackend(FaissBackend(index="ivf"), n_components=128),
        ),
        ("pca+exact", ProjectedBackend(ExactBackend())),
        (
            "random64+annoy",
            ProjectedBackend(AnnoyBackend(), method="random", n_components=64),
        ),
    ],
)
def test_make_backend_reads_recipes(recipe, expected):
    backend = make_backend(recipe)
    assert repr(backend) == repr(expected)
    assert type(backend) is type(expected)


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ("pca0+exact", "width must be at least 1"),
        ("pca128+", "Unknown backend 'pca128\\+'"),
        ("pca128+falconn", "Unknown backend 'falconn'.*'pca<N>\\+'"),
        ("faiss-hnsw", "Unknown backend 'faiss-hnsw'.*faiss-ivf"),
    ],
)
def test_make_backend_rejects_bad_recipes(recipe, message):
    with pytest.raises(ValueError, match=message):
        make_backend(recipe)


def test_classifier_accepts_a_recipe():
    X, y = make_classification(n_samples=200, n_features=6, random_state=1)
    clf = DeepKNNClassifier(
        backend="pca4+exact", n_neighbors=5, calibration_size=40, max_epochs=2,
        random_state=0,
    ).fit(X, y)  # fmt: skip
    for b in clf.backends_:
        assert b.n_components_ == min(4, b.n_features_in_)
    assert clf.score(X, y) > 0.5


@pytest.mark.parametrize("name", sorted(APPROXIMATE))
def test_classifier_accepts_backend_names(name):
    X, y = make_classification(
        n_samples=300, n_features=6, n_informative=4, n_classes=3, random_state=1
    )
    params = dict(
        n_neighbors=10,
        calibration_size=40,
        max_epochs=10,
        batch_size=64,
        random_state=0,
    )
    exact = DeepKNNClassifier(**params).fit(X[:240], y[:240])
    approx = DeepKNNClassifier(backend=name, **params).fit(X[:240], y[:240])
    assert all(isinstance(b, BACKENDS[name]) for b in approx.backends_)
    assert all(b.n_neighbors == 10 for b in approx.backends_)
    agreement = np.mean(approx.predict(X[240:]) == exact.predict(X[240:]))
    assert agreement >= 0.9


# ---------------------------------------------------------------------------------
# scikit-learn estimator checks
# ---------------------------------------------------------------------------------
# Expected failures of scikit-learn's estimator checks, with the reason for each.
# None: every check passes for every backend.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [
        AnnoyBackend(n_trees=10, random_state=0),
        PyNNDescentBackend(random_state=0),
        LSHBackend(random_state=0),
        ProjectedBackend(n_components=2, random_state=0),
        ProjectedBackend("lsh", method="random", n_components=2, random_state=0),
        FaissBackend(),
        FaissBackend(index="ivf", random_state=0),
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_docs_example_runs():
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "_examples" / "backends.py"
    runpy.run_path(str(script), run_name="__main__")


def test_a_projected_backends_faulty_answers_are_answered_again_in_its_space():
    # an inner engine's faulty row (a repeated id) is answered again by exact
    # search over the projected rows: with the projected query, not the caller's
    # (before: "mat1 and mat2 shapes cannot be multiplied (1x60 and 8x...)")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 60)).astype(np.float32)
    Q = rng.normal(size=(5, 60)).astype(np.float32)
    backend = ProjectedBackend(n_components=8, n_neighbors=4, random_state=0).fit(X)
    expected = backend.kneighbors(Q)
    inner = backend.backend_
    real = inner.kneighbors

    def faulty(*args, **kwargs):
        dist, ind = real(*args, **kwargs)
        ind = ind.copy()
        ind[0, 1] = ind[0, 0]  # query 0: one id twice
        return dist, ind

    inner.kneighbors = faulty
    with pytest.warns(RuntimeWarning, match="repeated or out-of-range ids"):
        got = backend.kneighbors(Q)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)


@pytest.mark.parametrize(
    "backend", [ExactBackend(3), ProjectedBackend(n_components=8, method="random")]
)
def test_values_whose_squared_distances_overflow_float32_are_refused(backend):
    # finite float32 rows of 1e19 gave infinite distances and arbitrary neighbours
    # (ExactBackend: [0 4 5] where scikit-learn finds [3 2 1]), with only an
    # engine-fault warning; ProjectedBackend's fallback then crashed
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 10))
    with pytest.raises(ValueError, match=r"squared norm of .* overflow float32"):
        clone(backend).fit(X * 1e19)
    fitted = clone(backend).fit(X)
    with pytest.raises(ValueError, match=r"\(norms up to 9.18e\+18 are safe\)"):
        fitted.kneighbors(X[:2] * 1e19)
    # cosine rows are normalised first: any finite scale is fine
    ExactBackend(3, metric="cosine").fit(X * 1e19).kneighbors(X[:2] * 1e19)


def test_the_overflow_limit_is_on_norms_with_room_for_rounding():
    # at the limit, opposite rows' distance (twice the norm) is finite; just past
    # it, the rows are refused. One large coordinate among many features is
    # judged by its norm (before: by the coordinate times sqrt(n_features))
    import skdknn.neighbors._base as base

    norm = np.float32(np.sqrt(base._MAX_SQUARED_NORM) * (1 - 1e-6))
    for d in (1, 10, 100):
        row = np.zeros(d, dtype=np.float32)
        row[0] = norm
        X = np.stack([row, -row, np.zeros(d, dtype=np.float32)])
        dist, ind = ExactBackend(n_neighbors=2).fit(X).kneighbors(X[:1], 3)
        assert np.isfinite(dist).all()
        np.testing.assert_array_equal(ind, [[0, 2, 1]])
        with pytest.raises(ValueError, match="overflow float32"):
            ExactBackend(n_neighbors=2).fit(X * np.float32(1.02))
    wide = np.zeros((3, 10_000), dtype=np.float32)
    wide[0, 0] = 4e17  # distances up to 1.6e35: fine
    ExactBackend(n_neighbors=2).fit(wide).kneighbors(wide)


@pytest.mark.parametrize(
    "backend", [ExactBackend(5, metric="cosine"), ProjectedBackend(n_components=8)]
)
def test_a_fortran_ordered_query_gets_the_bits_of_a_c_ordered_one(backend):
    # the cosine path normalised rows in the caller's layout: row norms summed
    # over a Fortran-ordered array rounded otherwise (before: other distances)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 40)).astype(np.float32)
    Q = rng.normal(size=(50, 40)).astype(np.float32)
    fitted = clone(backend).set_params(metric="cosine").fit(X)
    expected = fitted.kneighbors(Q)
    got = fitted.kneighbors(np.asfortranarray(Q))
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    if isinstance(backend, ExactBackend):  # (a PCA refit may round otherwise)
        refit = clone(backend).fit(np.asfortranarray(X))
        np.testing.assert_array_equal(refit.kneighbors(Q)[0], expected[0])
