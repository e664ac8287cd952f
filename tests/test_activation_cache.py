"""``DeepKNNClassifier(memory=)``: a cache hit gives exactly what the network computes.

Each test fits twice on one cache directory: first a network that fills the cache,
then a network with the same weights (the same ``state_dict``) whose forward pass
computes something else. The second fit must equal an uncached fit of the second
network, never reuse the first network's activations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn._activations import PROBE_ROWS


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:300] / 16).astype(np.float32), y[:300]


def _fit(net, X, y, layers, memory=None):
    return DeepKNNClassifier(
        net=FrozenEstimator(net),
        layers=layers,
        n_neighbors=5,
        calibration_size=60,
        memory=memory,
        random_state=0,
    ).fit(X, y)


def _assert_same_fit(cached, plain, X):
    """Same indexed activations (neighbour distances, bit for bit) and calibration."""
    for layer in plain.layers_:
        got = cached.kneighbors(X[:40], layer=layer)
        want = plain.kneighbors(X[:40], layer=layer)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(
        cached.calibration_nonconformity_, plain.calibration_nonconformity_
    )


def _assert_cache_follows_the_network(first, second, digits, layers, cache):
    X, y = digits
    _fit(first, X, y, layers, memory=cache)  # fills the cache
    cached = _fit(second, X, y, layers, memory=cache)
    _assert_same_fit(cached, _fit(second, X, y, layers), X)


def _mlp(activation):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), activation, nn.Linear(32, 10)).eval()


def test_same_weights_other_activation_module(digits, tmp_path):
    relu, tanh = _mlp(nn.ReLU()), _mlp(nn.Tanh())
    tanh.load_state_dict(relu.state_dict())
    _assert_cache_follows_the_network(relu, tanh, digits, ["1", "2"], str(tmp_path))


def _net_class(variant, traceable=True):
    """A class ``Net`` as a notebook cell defines it, re-run after an edit of
    its forward method: same qualified name, same parameters."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 32)
            self.out = nn.Linear(32, 10)

        def forward(self, x):
            if not traceable and x.sum() < -1e9:  # data-dependent: torch.fx fails
                x = -x
            if variant == "edited":
                x = 2 * x - 1
            return self.out(torch.relu(self.fc(x)))

    return Net


@pytest.mark.parametrize("traceable", [True, False])
def test_class_redefined_with_another_forward(digits, tmp_path, traceable):
    torch.manual_seed(0)
    old = _net_class("old", traceable)().eval()
    new = _net_class("edited", traceable)().eval()
    new.load_state_dict(old.state_dict())
    layers = ["relu", "out"] if traceable else ["fc", "out"]
    _assert_cache_follows_the_network(old, new, digits, layers, str(tmp_path))


def test_forward_hook_that_changes_outputs(digits, tmp_path):
    plain, hooked = _mlp(nn.ReLU()), _mlp(nn.ReLU())
    hooked.load_state_dict(plain.state_dict())
    hooked[1].register_forward_hook(lambda _m, _i, out: out * 0 + 1)
    _assert_cache_follows_the_network(plain, hooked, digits, ["1", "2"], str(tmp_path))


class Negatable(nn.Module):
    def __init__(self, negate=False):
        super().__init__()
        self.fc = nn.Linear(64, 32)
        self.out = nn.Linear(32, 10)
        self.negate = negate

    def forward(self, x):
        h = self.fc(x)
        if self.negate:
            h = -h
        return self.out(torch.relu(h))


def test_attribute_that_changes_the_forward(digits, tmp_path):
    torch.manual_seed(0)
    plain = Negatable().eval()
    negated = Negatable(negate=True).eval()
    negated.load_state_dict(plain.state_dict())
    layers = ["relu", "out"]
    _assert_cache_follows_the_network(plain, negated, digits, layers, str(tmp_path))
    # the same module with its attribute switched: the cache gives what an
    # uncached fit of the module gives (whatever its layer graph makes of it)
    X, y = digits
    plain.negate = True
    cached = _fit(plain, X, y, layers, memory=str(tmp_path))
    _assert_same_fit(cached, _fit(plain, X, y, layers), X)


class RowCounter(nn.Module):
    """Counts the rows of its forward passes in a class attribute (not state)."""

    rows = 0

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.fc.register_forward_pre_hook(
            lambda _m, args: setattr(
                RowCounter, "rows", RowCounter.rows + args[0].shape[0]
            )
        )

    def forward(self, x):
        return torch.relu(self.fc(x))


def test_a_hit_runs_the_network_on_the_probe_rows_only(digits, tmp_path):
    X, y = digits
    net = RowCounter().eval()
    RowCounter.rows = 0
    first = _fit(net, X, y, ["fc", "relu"], memory=str(tmp_path))
    assert RowCounter.rows == PROBE_ROWS + len(X)  # a miss: probe, then every row
    RowCounter.rows = 0
    hit = _fit(net, X, y, ["fc", "relu"], memory=str(tmp_path))
    assert RowCounter.rows == PROBE_ROWS
    _assert_same_fit(hit, first, X)
