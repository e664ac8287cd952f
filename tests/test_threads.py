"""Threads that share one network: every answer equals the single-threaded one.

A prefit network is shared, never copied: by the threads of a grid search (a
``FrozenEstimator`` is not cloned), by a classifier and the attacks on it, by a
Dask worker's threads. The DkNN reads it in eval mode whatever mode the user left
it in, and must neither change its answers nor leave the network changed.
"""

from __future__ import annotations

import copy
import functools
import sys
import threading

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn._activations import extract_activations, network_fingerprint
from skdknn._eval import eval_mode
from skdknn._graph import layer_graph
from skdknn.attacks import FGSMAttack
from skdknn.nets import layer_names


@functools.cache
def _trained():
    X, y = make_classification(300, 20, n_informative=10, n_classes=3, random_state=0)
    X = ((X - X.min(0)) / (X.max(0) - X.min(0))).astype(np.float32)
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(20, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 3),
    )
    optimiser = torch.optim.Adam(module.parameters(), 1e-2)
    for _ in range(20):
        optimiser.zero_grad()
        loss = nn.functional.cross_entropy(module(torch.from_numpy(X)), torch.tensor(y))
        loss.backward()
        optimiser.step()
    return module, X, y


def _module_in_training_mode():
    """A BatchNorm + Dropout network after an ordinary training loop: in training
    mode, as such a loop leaves it (a fresh copy per test). Inputs in [0, 1]."""
    module, X, y = _trained()
    module = copy.deepcopy(module)
    assert module.training
    return module, X, y


def _in_threads(n_threads, work):
    """``work(i)`` in ``n_threads`` threads started together; their results."""
    barrier = threading.Barrier(n_threads)
    results, errors = {}, []

    def run(i):
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [results[i] for i in range(n_threads)]


def test_threads_predicting_with_a_network_in_training_mode_answer_as_one_thread():
    # Before: eval mode was saved and restored around each forward pass, so one
    # thread put the network back in training mode while another was mid-pass:
    # BatchNorm normalised with batch statistics (and updated its running ones),
    # Dropout ran, and predictions and credibility changed.
    module, X, y = _module_in_training_mode()
    clf = DeepKNNClassifier(
        net=FrozenEstimator(module),
        layers=["2", "4"],
        n_neighbors=10,
        calibration_size=60,
        batch_size=8,
        random_state=0,
    ).fit(X[:200], y[:200])
    X_test = X[200:]
    expected = clf.predict_with_credibility(X_test)
    state = {k: v.clone() for k, v in module.state_dict().items()}

    answers = _in_threads(
        4, lambda i: [clf.predict_with_credibility(X_test) for _ in range(2)]
    )

    for answer in (a for per_thread in answers for a in per_thread):
        np.testing.assert_array_equal(answer.prediction, expected.prediction)
        np.testing.assert_array_equal(answer.credibility, expected.credibility)
        np.testing.assert_array_equal(answer.confidence, expected.confidence)
    assert module.training, "the user's mode is restored"
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), f"{key} changed"


def test_threads_attacking_a_network_in_training_mode_answer_as_one_thread():
    module, X, y = _module_in_training_mode()
    attack = FGSMAttack(FrozenEstimator(module), eps=0.1, batch_size=8)
    attack.fit(X[:100], y[:100])
    expected = attack.transform(X[100:160])

    answers = _in_threads(4, lambda i: attack.transform(X[100:160]))

    for answer in answers:
        np.testing.assert_array_equal(answer, expected)
    assert module.training


def _partly_frozen():
    """A network in training mode whose BatchNorm the user froze (eval mode)."""
    module, X, y = _module_in_training_mode()
    module[1].eval()
    return module, X, y


def _fit_and_predict(module, X, y):
    clf = DeepKNNClassifier(
        net=FrozenEstimator(module),
        layers=["2", "4"],
        n_neighbors=10,
        calibration_size=60,
    )
    clf.fit(X[:200], y[:200]).predict_with_credibility(X[200:])


def _attack(module, X, y):
    FGSMAttack(FrozenEstimator(module), eps=0.1).fit(X, y).transform(X)


@pytest.mark.parametrize(
    "use",
    [_fit_and_predict, _attack, lambda module, X, y: layer_names(module)],
    ids=["classifier", "attack", "layer_names"],
)
def test_every_submodules_own_mode_is_restored(use):
    # Before: module.train(True) restored the network, which also put the user's
    # frozen BatchNorm back in training mode.
    module, X, y = _partly_frozen()
    modes = [sub.training for sub in module.modules()]
    use(module, X, y)
    assert [sub.training for sub in module.modules()] == modes


# -- a network read with forward hooks (torch.fx cannot trace it) ------------------
#: thread id -> (reached, release): Branchy's forward waits there in that thread
_HOLD: dict = {}


class Branchy(nn.Module):
    """Untraceable (a data-dependent branch), so its layers are read with hooks."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.relu = nn.ReLU()
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        h = self.relu(self.fc(x))
        if h.sum() > -1e9:  # fx cannot trace this
            gate = _HOLD.get(threading.get_ident())
            if gate is not None:
                gate[0].set()
                assert gate[1].wait(30), "never released"
        return self.out(h)


def test_a_network_read_with_hooks_in_one_thread_is_the_same_for_another():
    # The hooks that read one thread's batch are not the network's. Before, another
    # thread saw them: it traced the network again (a new graph, a new extractor)
    # and got another memory= cache key, and could fail with "OrderedDict mutated
    # during iteration" while they were added.
    torch.manual_seed(0)
    net, X = Branchy().eval(), np.random.default_rng(0).random((8, 4), np.float32)
    layers, rows = ["relu", "out"], np.arange(8)
    names, graph = layer_names(net), layer_graph(net)
    assert not graph.traced
    fingerprint = network_fingerprint(net, X, rows, layers, batch_size=8)
    expected = extract_activations(net, X, layers, batch_size=8)
    found: dict = {}

    def read():
        _HOLD[threading.get_ident()] = gate
        found["activations"] = extract_activations(net, X, layers, batch_size=8)

    gate = (threading.Event(), threading.Event())
    thread = threading.Thread(target=read)
    thread.start()
    try:
        assert gate[0].wait(30), "the other thread never reached the forward pass"
        assert net.out._forward_hooks, "the other thread's hooks are in place"
        assert layer_names(net) == names
        assert layer_graph(net) is graph, "traced again"
        assert network_fingerprint(net, X, rows, layers, batch_size=8) == fingerprint
    finally:
        gate[1].set()
        thread.join(30)
        _HOLD.clear()
    for got, want in zip(found["activations"], expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert not net.out._forward_hooks and not net.relu._forward_hooks


def test_layer_names_while_other_threads_read_layers_with_hooks():
    torch.manual_seed(0)
    net, X = Branchy().eval(), np.random.default_rng(0).random((4, 4), np.float32)
    for module in (net.relu, net.out):  # hooks of the user's: long hook dicts
        for _ in range(100):
            module.register_forward_hook(lambda module, args, out: None)
    names = layer_names(net)
    stop, errors = threading.Event(), []

    def read(i):
        try:
            while not stop.is_set():
                extract_activations(net, X, ["relu", "out"], batch_size=4)
        except Exception as exc:  # reported below, not lost in the thread
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for reader in readers:
            reader.start()
        for _ in range(500):
            assert layer_names(net) == names
    finally:
        stop.set()
        for reader in readers:
            reader.join(30)
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


# -- networks that share submodules -------------------------------------------------
def _net_and_wrapper():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    wrapper = nn.Sequential(nn.Identity(), net)  # a model around a backbone
    net[1].eval()  # frozen by hand, the rest in training mode
    return net, wrapper


@pytest.mark.parametrize("first", ["wrapper", "net"])
def test_networks_sharing_submodules_read_in_interleaved_threads(first):
    # Before: a count per network. The block that closed first (on the wrapper or
    # on the net) put the shared submodules back in training mode while the other
    # thread was still inside its block, and the block that opened second, having
    # saved the modes it found (eval), left the net in eval mode for good.
    net, wrapper = _net_and_wrapper()
    modes = [sub.training for sub in wrapper.modules()]
    inner, outer = (wrapper, net) if first == "wrapper" else (net, wrapper)
    opened, second_open, first_closed = (threading.Event() for _ in range(3))
    seen = {}

    def read_first():
        with eval_mode(inner):
            opened.set()
            assert second_open.wait(30)
        first_closed.set()

    def read_second():
        assert opened.wait(30)
        with eval_mode(outer):
            second_open.set()
            assert first_closed.wait(30)
            seen["modes"] = [sub.training for sub in outer.modules()]

    threads = [threading.Thread(target=f) for f in (read_first, read_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen["modes"] == [False] * len(seen["modes"]), "left eval mode mid-block"
    assert [sub.training for sub in wrapper.modules()] == modes


class Fusable(nn.Module):
    """A network whose ``train()`` keeps state besides the flag (as re-parameterised
    or fused blocks do): ``fused`` must follow the mode."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.fused = False

    def train(self, mode=True):
        super().train(mode)
        self.fused = not mode
        return self

    def forward(self, x):
        return self.fc(x)


def test_a_train_override_sets_its_own_state_back():
    net = Fusable().train()
    with eval_mode(net):
        assert net.fused and not net.training
    assert net.training and not net.fused
    net.eval()
    with eval_mode(net):
        pass
    assert not net.training and net.fused


def test_a_train_override_that_raises_leaves_every_mode_as_it_was():
    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = nn.Linear(4, 2), nn.BatchNorm1d(2)

        def train(self, mode=True):
            self.bn.train(mode)  # a partial change, then a failure
            if not mode:
                raise RuntimeError("cannot switch to eval")
            return super().train(mode)

    net = Raises().train()
    with pytest.raises(RuntimeError, match="cannot switch to eval"), eval_mode(net):
        pass
    assert [sub.training for sub in net.modules()] == [True, True, True]
    with eval_mode(nn.Linear(2, 2)):  # nothing left open that would block others
        pass
