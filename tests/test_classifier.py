"""DeepKNNClassifier: behaviour, networks, conformal outputs and bad input."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _helpers import tiny
from sklearn.datasets import make_classification
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from skorch import NeuralNetClassifier
from torch import nn

from skdknn import DeepKNNClassifier, __version__, conformal
from skdknn._activations import extract_activations
from skdknn.datasets import load_mnist
from skdknn.neighbors import AnnoyBackend, ExactBackend, ShardedBackend
from skdknn.nets import MLP, LeNet5


@pytest.fixture(scope="module")
def tabular():
    X, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=0
    )
    return X, y


@pytest.fixture(scope="module")
def mnist_small():
    """1,000 real MNIST images from the embedded sample, 100 per class."""
    X, y = load_mnist(return_X_y=True)
    rows = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
    rows = np.random.default_rng(0).permutation(rows)
    return X[rows], y[rows]


@pytest.fixture(scope="module")
def fitted(tabular):
    X, y = tabular
    return tiny().fit(X[:300], y[:300])


def test_fit_attributes(fitted, tabular):
    X, y = tabular
    assert fitted.layers_ == ["relu1", "relu2", "logits"]
    assert fitted.n_features_in_ == 6
    assert fitted.input_shape_ is None
    assert len(fitted.backends_) == 3
    np.testing.assert_array_equal(fitted.classes_, [0, 1, 2])
    # 40 calibration points, class-balanced (14/13/13), disjoint from the index
    assert fitted.calibration_indices_.size == 40
    sizes = np.bincount(y[:300][fitted.calibration_indices_])
    assert sorted(sizes) == [13, 13, 14]
    assert np.intersect1d(fitted.train_indices_, fitted.calibration_indices_).size == 0
    assert fitted.train_indices_.size + 40 == 300
    assert fitted.calibration_nonconformity_.shape == (40,)
    assert np.all(np.diff(fitted.calibration_nonconformity_) >= 0)
    assert fitted.skdknn_version_ == __version__  # checked when unpickled


def test_outputs_are_consistent(fitted, tabular):
    X, _ = tabular
    Xq = X[300:]
    counts = fitted.neighbor_counts(Xq)
    assert counts.shape == (100, 3, 3)
    np.testing.assert_array_equal(counts.sum(axis=2), 5)
    proba = fitted.predict_proba(Xq)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba, counts.sum(axis=1) / 15)
    y_pred = fitted.predict(Xq)
    np.testing.assert_array_equal(y_pred, fitted.classes_[proba.argmax(axis=1)])
    p = fitted.p_values(Xq)
    alpha = 15 - counts.sum(axis=1)
    A = fitted.calibration_nonconformity_
    expected_p = (A[None, None, :] >= alpha[:, :, None]).mean(axis=2)
    np.testing.assert_allclose(p, expected_p)
    credibility = fitted.credibility(Xq)
    np.testing.assert_allclose(credibility, p.max(axis=1))
    # the predicted class carries the largest p-value
    np.testing.assert_allclose(p[np.arange(100), y_pred], credibility)
    np.testing.assert_allclose(fitted.confidence(Xq), 1 - np.sort(p, axis=1)[:, -2])
    sets = fitted.predict_set(Xq, significance=0.2)
    np.testing.assert_array_equal(sets, p > 0.2)


def test_kneighbors_index_into_training_X(fitted, tabular):
    X, y = tabular
    dist, ind = fitted.kneighbors(X[300:310])
    assert dist.shape == ind.shape == (10, 3, 5)
    assert np.isin(ind, fitted.train_indices_).all()
    # the neighbours' labels reproduce the counts
    labels = y[:300][ind]
    counts = conformal.neighbor_label_counts(labels, 3)
    np.testing.assert_array_equal(counts, fitted.neighbor_counts(X[300:310]))
    # an indexed training point is its own nearest neighbour, at distance 0
    rows = fitted.train_indices_[:5]
    dist1, ind1 = fitted.kneighbors(X[rows], layer="relu2")
    assert dist1.shape == (5, 5)
    np.testing.assert_array_equal(ind1[:, 0], rows)
    # float32 expansion |q|^2 - 2 q.t + |t|^2: zero up to rounding of the norms
    np.testing.assert_allclose(dist1[:, 0], 0.0, atol=1e-2)
    with pytest.raises(ValueError, match="Unknown layer 'nope'.*relu1"):
        fitted.kneighbors(X[:2], layer="nope")


def test_string_labels(tabular):
    X, y = tabular
    names = np.array(["cat", "dog", "eel"])[y]
    clf = tiny().fit(X[:300], names[:300])
    np.testing.assert_array_equal(clf.classes_, ["cat", "dog", "eel"])
    assert set(clf.predict(X[300:])) <= {"cat", "dog", "eel"}
    assert clf.score(X[300:], names[300:]) > 0.6


def test_same_random_state_is_deterministic(tabular):
    X, y = tabular
    a = tiny(random_state=3).fit(X[:300], y[:300])
    b = tiny(random_state=3).fit(X[:300], y[:300])
    np.testing.assert_array_equal(a.calibration_indices_, b.calibration_indices_)
    np.testing.assert_array_equal(a.predict(X[300:]), b.predict(X[300:]))
    np.testing.assert_array_equal(a.credibility(X[300:]), b.credibility(X[300:]))
    c = tiny(random_state=4).fit(X[:300], y[:300])
    assert not np.array_equal(a.calibration_indices_, c.calibration_indices_)


@pytest.mark.parametrize(
    "backend",
    [
        "annoy",
        "lsh",
        "random4+exact",
        ShardedBackend(AnnoyBackend(n_trees=1), n_shards=2),
    ],
    ids=["annoy", "lsh", "random-projection", "sharded-annoy"],
)
def test_random_state_seeds_a_randomised_backend(tabular, backend):
    # the classifier's random_state reaches an unseeded randomised backend: the
    # same integer builds the same index (it did not: two fits with
    # random_state=0 gave other neighbours, hence other credibilities)
    X, y = tabular
    a = tiny(backend=backend, random_state=3).fit(X[:300], y[:300])
    b = tiny(backend=backend, random_state=3).fit(X[:300], y[:300])
    for layer in a.layers_:
        left_answer = a.kneighbors(X[300:], layer=layer)
        right_answer = b.kneighbors(X[300:], layer=layer)
        for left, right in zip(left_answer, right_answer, strict=True):
            np.testing.assert_array_equal(left, right)
    np.testing.assert_array_equal(a.credibility(X[300:]), b.credibility(X[300:]))
    # the parameter itself is not changed (the seed goes to the fitted clones)
    assert a.backend is backend
    if not isinstance(backend, str):
        assert backend.random_state is None
    assert isinstance(a.backends_[0].random_state, int)


def test_random_state_keeps_a_seeded_backend_seed(tabular):
    X, y = tabular
    clf = tiny(backend=AnnoyBackend(random_state=5), random_state=3)
    clf.fit(X[:300], y[:300])
    assert [b.random_state for b in clf.backends_] == [5] * len(clf.layers_)


def test_torch_global_rng_untouched(tabular):
    X, y = tabular
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny().fit(X[:300], y[:300])
    torch.testing.assert_close(torch.rand(3), expected)


def test_coverage_of_prediction_sets():
    # calibration and test points are exchangeable draws from one distribution
    X, y = make_classification(
        n_samples=2400,
        n_features=8,
        n_informative=3,
        n_classes=3,
        flip_y=0.15,
        random_state=1,
    )
    clf = tiny(calibration_size=400, n_neighbors=15, max_epochs=5)
    clf.fit(X[:1600], y[:1600])
    p = clf.p_values(X[1600:])
    A = clf.calibration_nonconformity_
    n_cal = A.size
    set_sizes = []
    for eps in (0.05, 0.1, 0.2):
        sets = conformal.prediction_sets(p, eps)
        coverage = sets[np.arange(800), y[1600:]].mean()
        # guarantee 1 - eps - 1/(|A|+1); 3 standard errors of an 800-point estimate
        slack = 3 * np.sqrt(eps * (1 - eps) / 800)
        assert coverage >= 1 - eps - 1 / (n_cal + 1) - slack, (eps, coverage)
        # and not more than the calibration points cover themselves (the integer
        # scores tie, so this can exceed 1 - eps): 4 standard errors of the two
        # samples (800 test, 400 calibration points)
        expected = in_sample_coverage(A, eps)
        sd = np.sqrt(expected * (1 - expected) * (1 / 800 + 1 / n_cal))
        assert abs(coverage - expected) <= 4 * sd, (eps, coverage, expected)
        set_sizes.append(sets.sum(axis=1).mean())
    # informative sets: fewer classes than all three, fewer at a larger eps
    assert set_sizes[0] < 3 and set_sizes[2] < 2
    assert set_sizes[0] > set_sizes[1] > set_sizes[2]


def in_sample_coverage(scores, eps):
    """Share of the calibration points whose own p-value exceeds eps: what a point
    exchangeable with them is covered with, ties of the integer scores included."""
    p_own = (scores[None, :] >= scores[:, None]).mean(axis=1)
    return np.mean(p_own > eps)


def test_images_and_flat_rows_with_input_shape(mnist_small):
    X, y = mnist_small
    clf = DeepKNNClassifier(
        n_neighbors=10,
        calibration_size=100,
        max_epochs=2,
        random_state=0,
        net=LeNet5,
    )
    clf.fit(X[:600], y[:600])
    assert clf.input_shape_ == (1, 28, 28)
    assert clf.n_features_in_ == 784
    assert clf.layers_ == ["relu1", "relu2", "relu3", "relu4", "logits"]
    from_images = clf.predict_proba(X[600:650])
    from_rows = clf.predict_proba(X[600:650].reshape(50, -1))
    np.testing.assert_array_equal(from_images, from_rows)
    # (n, H, W) is read as single-channel images
    np.testing.assert_array_equal(clf.predict_proba(X[600:650, 0]), from_images)
    assert clf.score(X[600:], y[600:]) > 0.5

    flat = DeepKNNClassifier(
        n_neighbors=10,
        calibration_size=100,
        max_epochs=2,
        random_state=0,
        net=LeNet5,
        input_shape=(1, 28, 28),
    ).fit(X[:600].reshape(600, -1), y[:600])
    np.testing.assert_array_equal(flat.predict_proba(X[600:650]), from_images)


def test_default_net_on_images_is_the_paper_cnn(mnist_small):
    X, y = mnist_small
    clf = DeepKNNClassifier(
        n_neighbors=10, calibration_size=100, max_epochs=1, random_state=0
    ).fit(X[:400], y[:400])
    assert type(clf.module_).__name__ == "DkNNPaperCNN"
    assert clf.layers_ == ["relu1", "relu2", "relu3", "logits"]
    widths = [b.n_features_in_ for b in clf.backends_]
    assert widths == [12544, 3200, 128, 10]


class CountingMLP(nn.Module):
    """Records whether autograd was off during its forward passes."""

    grad_enabled: list[bool] = []

    def __init__(self, n_features=6, n_classes=3):
        super().__init__()
        self.fc = nn.Linear(n_features, 16)
        self.act = nn.ReLU()
        self.out = nn.Linear(16, n_classes)

    def forward(self, x):
        CountingMLP.grad_enabled.append(torch.is_grad_enabled())
        return self.out(self.act(self.fc(x)))


def test_activations_without_autograd(tabular):
    X, y = tabular
    clf = tiny(net=CountingMLP, batch_size=100).fit(X[:300], y[:300])
    assert clf.layers_ == ["act", "out"]  # activations, then the last module
    grad_enabled = []
    # the traced network calls its leaf modules, so their hooks still fire
    clf.module_.fc.register_forward_pre_hook(
        lambda *_: grad_enabled.append(torch.is_grad_enabled())
    )
    clf.predict(X[300:])
    assert grad_enabled == [False]  # one batch of 100 rows, no graph


def test_network_kinds(tabular):
    X, y = tabular
    Xtr, ytr = X[:300].astype(np.float32), y[:300]
    # a torch module instance is copied before training: the user's stays untouched
    module = MLP(n_features=6, n_classes=3, hidden_layer_sizes=(8,))
    before = [p.detach().clone() for p in module.parameters()]
    clf = tiny(net=module).fit(Xtr, ytr)
    for p, q in zip(before, module.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert clf.layers_ == ["relu1", "logits"]

    # a skorch net is cloned and trained with its own settings
    net = NeuralNetClassifier(
        MLP,
        module__n_features=6,
        module__n_classes=3,
        criterion=nn.CrossEntropyLoss,
        max_epochs=3,
        train_split=None,
        verbose=0,
    )
    clf = tiny(net=net).fit(Xtr, ytr)
    assert not hasattr(net, "module_")
    assert len(clf.net_.history) == 3

    # a prefit skorch net in FrozenEstimator is used as is, never retrained
    frozen = FrozenEstimator(clf.net_)
    weights = [p.detach().clone() for p in clf.net_.module_.parameters()]
    refit = tiny(net=frozen, n_neighbors=7).fit(Xtr, ytr)
    assert refit.net_ is frozen
    assert len(frozen.estimator.history) == 3
    for p, q in zip(weights, refit.module_.parameters(), strict=True):
        torch.testing.assert_close(p, q)

    # a prefit bare torch module in FrozenEstimator works too
    bare = tiny(net=FrozenEstimator(clf.net_.module_)).fit(Xtr, ytr)
    np.testing.assert_array_equal(
        bare.predict(X[300:]), tiny(net=frozen).fit(Xtr, ytr).predict(X[300:])
    )


# -- bad input ------------------------------------------------------------------------


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        DeepKNNClassifier().predict(np.zeros((2, 4)))
    with pytest.raises(NotFittedError):
        DeepKNNClassifier().credibility(np.zeros((2, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_rejected(tabular, fitted, bad):
    X, y = tabular
    X_bad = X[:300].copy()
    X_bad[5, 2] = bad
    with pytest.raises(ValueError, match="NaN|infinity"):
        tiny().fit(X_bad, y[:300])
    with pytest.raises(ValueError, match="NaN|infinity"):
        fitted.predict(X_bad[:10])


def test_wrong_number_of_features(fitted):
    with pytest.raises(ValueError, match="X has 5 features.*expecting 6"):
        fitted.predict(np.zeros((3, 5)))


def test_wrong_image_shape(mnist_small):
    X, y = mnist_small
    clf = DeepKNNClassifier(
        n_neighbors=5, calibration_size=50, max_epochs=1, net=LeNet5, random_state=0
    ).fit(X[:300], y[:300])
    with pytest.raises(
        ValueError, match=r"images of shape \(1, 32, 32\).*\(1, 28, 28\)"
    ):
        clf.predict(np.zeros((2, 1, 32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        clf.predict(np.zeros((2, 1, 1, 28, 28), dtype=np.float32))


def test_one_dimensional_input(tabular):
    X, y = tabular
    with pytest.raises(ValueError, match="Expected 2D array"):
        tiny().fit(X[:, 0], y)


def test_fewer_samples_than_k(tabular):
    X, y = tabular
    with pytest.raises(ValueError, match="n_neighbors=80 exceeds the 60 samples"):
        tiny(n_neighbors=80, calibration_size=30).fit(X[:90], y[:90])


def test_class_too_small_for_calibration(tabular):
    X, y = tabular
    y = np.where(np.arange(len(y)) < 5, 7, y)  # class 7 has 5 samples
    with pytest.raises(ValueError, match="Class 7 has 5 samples"):
        tiny(calibration_size=60).fit(X, y)


def test_calibration_larger_than_data(tabular):
    X, y = tabular
    with pytest.raises(ValueError, match="only 100 samples"):
        tiny(calibration_size=500).fit(X[:100], y[:100])


def test_unknown_layer_lists_available(tabular):
    X, y = tabular
    match = "Unknown layer 'conv9'.*'hidden.relu1'.*'logits'"
    with pytest.raises(ValueError, match=match):
        tiny(layers=["relu1", "conv9"]).fit(X, y)


def test_single_class(tabular):
    X, _ = tabular
    with pytest.raises(ValueError, match="at least 2 classes"):
        tiny().fit(X, np.zeros(len(X)))


def test_bad_net_type(tabular):
    X, y = tabular
    with pytest.raises(TypeError, match="net must be None"):
        tiny(net="resnet").fit(X, y)


def test_bad_backend_name(tabular):
    X, y = tabular
    with pytest.raises(ValueError, match="Unknown backend 'falconn'.*exact"):
        tiny(backend="falconn").fit(X, y)


def test_inputs_not_modified(tabular, mnist_small):
    X, y = tabular
    X32 = X.astype(np.float32)
    X_copy, y_copy = X32.copy(), y.copy()
    clf = tiny().fit(X32, y)
    clf.predict(X32)
    clf.kneighbors(X32[:5])
    np.testing.assert_array_equal(X32, X_copy)
    np.testing.assert_array_equal(y, y_copy)
    images, labels = mnist_small
    images_copy = images.copy()
    DeepKNNClassifier(
        n_neighbors=5, calibration_size=50, max_epochs=1, net=LeNet5, random_state=0
    ).fit(images[:300], labels[:300]).predict(images[300:400])
    np.testing.assert_array_equal(images, images_copy)


def test_module_class_receives_shape_arguments(tabular, mnist_small):
    X, y = tabular
    clf = tiny(net=MLP).fit(X[:300], y[:300])
    assert clf.module_.logits.out_features == 3
    assert clf.module_.hidden.fc1.in_features == 6
    images, labels = mnist_small
    cnn = DeepKNNClassifier(
        net=LeNet5, n_neighbors=5, calibration_size=50, max_epochs=1, random_state=0
    ).fit(images[:300, :, 2:26, 2:26], labels[:300])
    assert cnn.input_shape_ == (1, 24, 24)
    assert cnn.predict(images[300:310, :, 2:26, 2:26]).shape == (10,)


def test_threads_can_share_a_fitted_model():
    """Forward hooks on a shared module only see their own thread's pass."""
    import threading

    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=1200, n_features=20, random_state=0)
    X = X.astype(np.float32)
    clf = DeepKNNClassifier(
        n_neighbors=5, calibration_size=100, max_epochs=1, batch_size=16,
        random_state=0,
    ).fit(X, y)  # fmt: skip
    halves = {"a": X[:600], "b": X[600:]}

    def activations(rows):
        return extract_activations(clf.module_, rows, clf.layers_, batch_size=16)

    expected = {k: activations(v) for k, v in halves.items()}
    for _ in range(3):
        results: dict[str, object] = {}

        def run(name, results):
            try:
                results[name] = activations(halves[name])
            except Exception as error:  # reported by the assertion below
                results[name] = error

        threads = [threading.Thread(target=run, args=(k, results)) for k in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name, ref in expected.items():
            got = results[name]
            assert isinstance(got, list), got
            for a, b in zip(got, ref, strict=True):
                np.testing.assert_array_equal(a, b)


class _ThreadRecordingBackend(ExactBackend):
    """ExactBackend that notes the thread of every search (clones share the list)."""

    threads: list[str] = []

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        _ThreadRecordingBackend.threads.append(threading.current_thread().name)
        return super().kneighbors(X, n_neighbors, return_distance)


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_n_jobs_runs_the_layers_searches_in_threads(tabular, n_jobs):
    X, y = tabular
    clf = tiny(max_epochs=1, backend=_ThreadRecordingBackend(), n_jobs=n_jobs)
    clf.fit(X[:200], y[:200])
    _ThreadRecordingBackend.threads.clear()
    clf.predict(X[200:210])
    threads = _ThreadRecordingBackend.threads
    assert len(threads) == 3  # one search per layer
    on_main = [name == threading.main_thread().name for name in threads]
    assert all(on_main) if n_jobs is None else not any(on_main)


def test_activation_progress_bar_counts_rows_and_completes(tabular, capsys):
    """One bar over the rows of each stream, ending at its total; a stream left
    after its first chunk (fit reads one batch to learn the widths) clears its
    bar. Before: fit printed a bar stuck at '0/1' and an empty '0it' bar."""
    X, y = tabular
    tiny(verbose=1).fit(X[:300], y[:300])
    err = capsys.readouterr().err
    # each bar is one line ("\n"), redrawn after "\r": its last drawing counts
    lines = [line.split("\r")[-1] for line in err.split("\n")]
    finals = [line for line in lines if "activations" in line]
    assert finals, err
    for line in finals:
        done, total = line.split("|")[2].split()[0].split("/")
        assert done == total, line
    assert "0it" not in err and "0/1 " not in err
    # not verbose: no bar at all
    tiny().fit(X[:300], y[:300])
    assert "activations" not in capsys.readouterr().err


class _IndicesOnlyBackend(ExactBackend):
    """An index that takes ``return_distance`` as the protocol's bool and is never
    asked for distances (e.g. one that cannot compute them)."""

    def kneighbors(self, X=None, n_neighbors=None, return_distance=True):
        if return_distance is not False:
            raise AssertionError(f"asked return_distance={return_distance!r}")
        return super().kneighbors(X, n_neighbors, return_distance=False)


def test_lazy_counts_and_proba_of_a_dask_array_ask_for_no_distances(fitted, tabular):
    # neighbor_counts / predict_proba of a dask array: searches without distances
    # (as for an array in memory), and lazy outputs of the numpy path's shape,
    # dtype and values (2 layers, 3 classes: the shapes tell the axes apart)
    da = pytest.importorskip("dask.array")
    X, y = tabular
    net = FrozenEstimator(fitted.net_)  # trained once, by the fixture
    clf = tiny(net=net, layers=["relu1", "logits"], backend=_IndicesOnlyBackend())
    clf.fit(X[:300], y[:300])
    Q = da.from_array(X[300:], chunks=40)
    for method in ("neighbor_counts", "predict_proba"):
        expected = getattr(clf, method)(X[300:])
        lazy = getattr(clf, method)(Q)
        assert isinstance(lazy, da.Array), method
        assert (lazy.shape, lazy.dtype) == (expected.shape, expected.dtype), method
        assert lazy.chunks[0] == Q.chunks[0], method
        np.testing.assert_array_equal(lazy.compute(), expected, err_msg=method)
    assert expected.shape == (100, 3) and expected.dtype == np.float64


def test_outputs_without_neighbors_allocate_no_neighbor_arrays(fitted, tabular):
    # without return_neighbors, no (n, n_layers, n_neighbors) array of neighbours
    # or distances is made: the traced peak (numpy's allocations) of the one-pass
    # method stays below the size of the distances alone (measured: about 0.35x)
    import tracemalloc

    from sklearn import config_context

    X, y = tabular
    k = 50
    clf = tiny(net=FrozenEstimator(fitted.net_), n_neighbors=k).fit(X[:300], y[:300])
    Q = np.repeat(X[300:], 20, axis=0)
    distances_size = 4 * len(Q) * len(clf.layers_) * k
    with config_context(working_memory=0.05):  # small chunks of queries
        clf.predict_with_credibility(Q[:10])  # warm up
        tracemalloc.start()
        try:
            clf.predict_with_credibility(Q)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < distances_size, (peak, distances_size)


class HugeHidden(nn.Module):
    """A hidden layer ``big`` whose activations are 1e20 times the inputs'."""

    def __init__(self, scale: float = 1e20):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.scale = scale

    def forward(self, x):
        big = torch.relu(x) * self.scale
        return self.fc(torch.relu(x)) + 0.0 * big.sum(1, keepdim=True)


def test_activations_that_overflow_name_their_layer(tabular):
    """A layer whose activations overflow float32's squared distances is named in
    the error, at fit and at query (before: the backend's message only, which
    told to "Rescale X" without saying which layer's rows were meant)."""
    X, y = tabular
    X = X.astype(np.float32)
    frozen = FrozenEstimator(HugeHidden())
    with pytest.raises(ValueError, match=r"^layer 'mul': .*squared norm"):
        tiny(net=frozen, layers=["fc", "mul"]).fit(X[:300], y[:300])
    small = HugeHidden(scale=1.0)
    clf = tiny(net=FrozenEstimator(small), layers=["fc", "mul"]).fit(X[:300], y[:300])
    small.scale = 1e20
    with pytest.raises(ValueError, match=r"^layer 'mul': .*squared norm"):
        clf.predict(X[300:])
