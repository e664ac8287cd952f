"""scikit-learn integration: estimator checks, clone, Pipeline, GridSearchCV, joblib."""

from __future__ import annotations

import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks
from skorch import NeuralNetClassifier
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn.exceptions import InconsistentVersionWarning

# Expected failures of scikit-learn's estimator checks, with the reason for each.
# None today: every check passes with the tiny MLP configuration below.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [
        DeepKNNClassifier(
            n_neighbors=3,
            calibration_size=0.2,
            max_epochs=5,
            batch_size=32,
            random_state=0,
        )
    ],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    X, y = make_classification(
        n_samples=360, n_features=5, n_informative=3, n_classes=3, random_state=0
    )
    return X.astype(np.float32), y


def small(**params):
    defaults = dict(
        n_neighbors=5, calibration_size=30, max_epochs=8, batch_size=64, random_state=0
    )
    defaults.update(params)
    return DeepKNNClassifier(**defaults)


def test_clone_gives_unfitted_copy_with_same_params(data):
    X, y = data
    clf = small(layers=["relu2", "logits"]).fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "net_")
    assert copy.layers is not clf.layers  # deep-copied, not shared


def test_pipeline_with_preprocessing(data):
    X, y = data
    pipe = make_pipeline(StandardScaler(), small()).fit(X[:300], y[:300])
    assert pipe.score(X[300:], y[300:]) > 0.6
    # values, not only shapes: the layer-averaged neighbour label shares of the
    # scaled rows, and the largest p-value from the calibration scores
    scaled = pipe[0].transform(X[300:])
    clf = pipe[-1]
    counts = clf.neighbor_counts(scaled)
    proba = pipe.predict_proba(X[300:])
    np.testing.assert_allclose(proba, counts.sum(axis=1) / (len(clf.layers_) * 5))
    np.testing.assert_array_equal(pipe.predict(X[300:]), proba.argmax(axis=1))
    alpha = len(clf.layers_) * 5 - counts.sum(axis=1)
    A = clf.calibration_nonconformity_
    p = (A[None, None, :] >= alpha[:, :, None]).mean(axis=2)
    np.testing.assert_allclose(clf.credibility(scaled), p.max(axis=1))
    # the scaler is applied: the raw rows give other neighbours
    assert not np.array_equal(clf.neighbor_counts(X[300:]), counts)


class ForwardCounter(nn.Module):
    """An MLP that counts its forward passes in a class attribute.

    The count lives outside the instance so that it does not change the module's
    state (which keys the activation cache). It is kept by a forward hook (a
    lambda, which cannot be pickled): the activation cache must key the network
    by its weights, without pickling it (it raised PicklingError before).
    """

    calls = 0

    def __init__(self, n_features=5, n_classes=3):
        super().__init__()
        self.fc1 = nn.Linear(n_features, 32)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(32, 32)
        self.relu2 = nn.ReLU()
        self.logits = nn.Linear(32, n_classes)
        self.fc1.register_forward_pre_hook(
            lambda *_: setattr(ForwardCounter, "calls", ForwardCounter.calls + 1)
        )

    def forward(self, x):
        return self.logits(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


@pytest.fixture(scope="module")
def prefit_net(data):
    X, y = data
    net = NeuralNetClassifier(
        ForwardCounter,
        criterion=nn.CrossEntropyLoss,
        max_epochs=5,
        train_split=None,
        verbose=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net.fit(X, y)
    return net


def _grid_search(prefit_net, memory):
    search = GridSearchCV(
        small(net=FrozenEstimator(prefit_net), memory=memory, batch_size=1000),
        {"n_neighbors": [3, 7], "layers": [["relu1", "logits"], ["logits"]]},
        cv=3,
        refit=False,
    )
    return search


def test_grid_search_prefit_net_reuses_cached_activations(data, prefit_net, tmp_path):
    X, y = data
    history_before = len(prefit_net.history)
    weights = [p.detach().clone() for p in prefit_net.module_.parameters()]

    ForwardCounter.calls = 0
    plain = _grid_search(prefit_net, memory=None).fit(X, y)
    # 4 candidates x 3 folds x (fit: indexed rows, then calibration rows; score)
    assert ForwardCounter.calls == 36

    ForwardCounter.calls = 0
    cached = _grid_search(prefit_net, memory=str(tmp_path)).fit(X, y)
    # one forward pass per (fold, layer list) for all the fit rows: 3 folds x 2
    # layer lists; scoring (predict) is never cached: 4 candidates x 3 folds; and
    # each of the 12 fits fingerprints the network on a few probe rows (one small
    # forward pass, see test_activation_cache.py)
    assert ForwardCounter.calls == 3 * 2 + 12 + 12
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"], plain.cv_results_["mean_test_score"]
    )
    assert set(cached.cv_results_["param_n_neighbors"]) == {3, 7}

    # the prefit network was never retrained
    assert len(prefit_net.history) == history_before
    for before, after in zip(weights, prefit_net.module_.parameters(), strict=True):
        torch.testing.assert_close(before, after)


def test_grid_search_retrains_default_net_per_candidate(data):
    X, y = data
    search = GridSearchCV(small(max_epochs=2), {"n_neighbors": [3, 5]}, cv=2)
    search.fit(X, y)
    assert search.best_params_["n_neighbors"] in (3, 5)
    assert search.best_estimator_.n_neighbors == search.best_params_["n_neighbors"]


def test_joblib_round_trip(data, tmp_path):
    X, y = data
    clf = small().fit(X[:300], y[:300])
    path = tmp_path / "dknn.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict(X[300:]), clf.predict(X[300:]))
    np.testing.assert_array_equal(loaded.credibility(X[300:]), clf.credibility(X[300:]))
    np.testing.assert_array_equal(loaded.p_values(X[300:]), clf.p_values(X[300:]))
    assert loaded.skdknn_version_ == clf.skdknn_version_


def test_version_recorded_and_checked_on_load(data):
    X, y = data
    clf = small().fit(X[:300], y[:300])
    from skdknn import __version__

    assert clf.skdknn_version_ == __version__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pickle.loads(pickle.dumps(clf))  # same version: silent
    clf.skdknn_version_ = "0.0.1"
    with pytest.warns(InconsistentVersionWarning, match="fitted with skdknn 0.0.1"):
        pickle.loads(pickle.dumps(clf))
