"""One pass for every DkNN output; memory bounded by a budget, not by n."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn._activations import extract_activations
from skdknn.neighbors import ProjectedBackend


class Wide(nn.Module):
    """A random network with one very wide layer (``wide``) and logits."""

    def __init__(self, n_features=8, width=4096, n_classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(n_features, width)
        self.wide = nn.ReLU()
        self.logits = nn.Linear(width, n_classes)

    def forward(self, x):
        return self.logits(self.wide(self.fc(x)))


def _data(n, n_features=8, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int) + (X[:, 1] > 1)
    return X, y


def _dknn(net, **params):
    defaults = dict(n_neighbors=5, calibration_size=30, batch_size=64, random_state=0)
    return DeepKNNClassifier(net=FrozenEstimator(net), **{**defaults, **params})


@pytest.fixture(scope="module")
def fitted():
    X, y = _data(400)
    return _dknn(Wide(width=256), layers=["fc", "wide", "logits"]).fit(X, y), X


def test_single_pass_equals_the_separate_methods(fitted):
    clf, X = fitted
    Xq = X[:50] + 0.1
    result = clf.predict_with_credibility(Xq, return_neighbors=True)
    np.testing.assert_array_equal(result.prediction, clf.predict(Xq))
    np.testing.assert_array_equal(result.p_values, clf.p_values(Xq))
    np.testing.assert_array_equal(result.credibility, clf.credibility(Xq))
    np.testing.assert_array_equal(result.confidence, clf.confidence(Xq))
    np.testing.assert_array_equal(result.counts, clf.neighbor_counts(Xq))
    np.testing.assert_array_equal(clf.predict_set(Xq, 0.2), result.p_values > 0.2)
    distances, indices = clf.kneighbors(Xq)
    np.testing.assert_array_equal(result.neighbors, indices)
    np.testing.assert_array_equal(result.distances, distances)
    assert result.counts.shape == (50, 3, clf.classes_.size)
    # the documented dtypes (equal values in another dtype compare equal above)
    assert result.counts.dtype == np.int64 and result.neighbors.dtype == np.intp
    assert result.distances.dtype == np.float32
    assert "neighbors" not in clf.predict_with_credibility(Xq[:2])


def test_single_pass_runs_the_network_once(fitted):
    clf, X = fitted
    calls = []
    handle = clf.module_.fc.register_forward_hook(lambda *_: calls.append(1))
    try:
        clf.predict_with_credibility(X[:64])
        assert len(calls) == 1  # one forward batch, every layer, every output
    finally:
        handle.remove()


def test_chunked_queries_give_the_same_answers(fitted):
    clf, X = fitted
    whole = clf.predict_with_credibility(X, return_neighbors=True)
    with sklearn.config_context(working_memory=0.05):  # a few rows per chunk
        chunked = clf.predict_with_credibility(X, return_neighbors=True)
    for key in whole:
        if key == "distances":  # BLAS rounds products of other sizes differently
            np.testing.assert_allclose(whole[key], chunked[key], atol=1e-5)
        else:
            np.testing.assert_array_equal(whole[key], chunked[key])


def test_streamed_fit_equals_whatever_the_budget():
    X, y = _data(300)
    net = Wide(width=256)
    whole = _dknn(net, layers=["wide", "logits"]).fit(X, y)
    with sklearn.config_context(working_memory=0.05):
        chunked = _dknn(net, layers=["wide", "logits"]).fit(X, y)
    np.testing.assert_array_equal(
        whole.calibration_nonconformity_, chunked.calibration_nonconformity_
    )
    np.testing.assert_array_equal(
        whole.kneighbors(X[:20])[1], chunked.kneighbors(X[:20])[1]
    )


def test_kneighbors_like_scikit_learn(fitted):
    clf, X = fitted
    dist, ind = clf.kneighbors(X[:5], n_neighbors=2, layer="logits")
    assert dist.shape == ind.shape == (5, 2)
    only = clf.kneighbors(X[:5], n_neighbors=2, layer="logits", return_distance=False)
    np.testing.assert_array_equal(only, ind)
    # X=None: the indexed rows themselves, each left out of its own neighbours
    loo = clf.kneighbors(n_neighbors=3, return_distance=False)
    assert loo.shape == (clf.train_indices_.size, 3, 3)
    assert not (loo == clf.train_indices_[:, None, None]).any()
    backend = clf.backends_[1]
    np.testing.assert_array_equal(
        loo[:, 1], clf.train_indices_[backend.kneighbors(None, 3)[1]]
    )


def test_y_index_is_public_and_aligned(fitted):
    clf, X = fitted
    assert clf.y_index_.shape == clf.train_indices_.shape
    _, ind = clf.kneighbors(X[:5], layer="logits")
    counts = clf.predict_with_credibility(X[:5]).counts[:, 2]
    lookup = dict(zip(clf.train_indices_, clf.y_index_, strict=True))
    expected = [
        np.bincount([lookup[i] for i in row], minlength=clf.classes_.size)
        for row in ind
    ]
    np.testing.assert_array_equal(counts, expected)


def test_streamed_projection_equals_the_in_memory_one():
    X, y = _data(300)
    net = Wide(width=512)
    backend = ProjectedBackend(n_components=8, pca_samples=100, random_state=0)
    clf = _dknn(net, layers=["wide"], backend=backend).fit(X, y)
    (acts,) = extract_activations(
        net, X, ["wide"], batch_size=64, rows=clf.train_indices_
    )
    direct = ProjectedBackend(
        n_components=8, pca_samples=100, random_state=0, n_neighbors=5
    ).fit(acts)
    np.testing.assert_array_equal(clf.backends_[0].components_, direct.components_)
    np.testing.assert_array_equal(
        clf.backends_[0].kneighbors(acts[:10])[1], direct.kneighbors(acts[:10])[1]
    )


# -- peak memory -------------------------------------------------------------------
def _peak_rss_growth(fn):
    """Peak resident memory (bytes) reached while ``fn`` runs, above the start.

    Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM). Large
    arrays (numpy's and torch's) are mapped and unmapped directly, so the peak
    follows their sizes.
    """

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
        raise KeyError(key)

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("peak RSS cannot be reset on this platform")
    start = status("VmRSS:")
    fn()
    return status("VmHWM:") - start


def test_predict_memory_does_not_grow_with_the_number_of_queries():
    X, y = _data(600)
    clf = _dknn(Wide(width=8192), layers=["wide", "logits"]).fit(X, y)
    few, many = _data(200, seed=1)[0], _data(1600, seed=2)[0]  # 6.5 MB vs 52 MB
    with sklearn.config_context(working_memory=4):
        clf.predict_with_credibility(few)  # warm up (allocator, threads)
        small = _peak_rss_growth(lambda: clf.predict_with_credibility(few))
        large = _peak_rss_growth(lambda: clf.predict_with_credibility(many))
    # 8x the queries: the held activations would grow by 46 MB (they did)
    assert large < 2 * small + 8 * 2**20, (small / 2**20, large / 2**20)


def test_fit_with_a_projection_never_holds_the_full_width_layer():
    width, n = 65536, 1024  # the full layer: 256 MiB of float32
    X, y = _data(n)
    net = Wide(width=width)
    backend = ProjectedBackend(n_components=16, pca_samples=48, random_state=0)
    clf = _dknn(net, layers=["wide"], backend=backend, batch_size=32)
    with sklearn.config_context(working_memory=16):
        clf.fit(X[:200], y[:200])  # warm up: one-time costs (tracing, libraries)
        growth = _peak_rss_growth(lambda: clf.fit(X, y))
    assert clf.backends_[0].components_.shape == (width, 16)
    # measured: ~16 MiB (the budget); the full layer alone would be 256 MiB
    assert growth < n * width * 4 / 4, growth / 2**20
