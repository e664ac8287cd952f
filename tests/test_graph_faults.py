"""A layer's output is the tensor the user named, of the module's current forward.

Each test reproduces a silent wrong answer found by review: a traced graph reused
after the module changed, in-place operations dropped from the truncated graph,
a name that meant another tensor, a reused module missed by the hooks when only
some batches call it twice, and a module returning a tuple.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

from skdknn._activations import extract_activations, forward_to_layers
from skdknn.nets import layer_names


def _outputs(module, x, layers):
    with torch.no_grad():
        return forward_to_layers(module.eval(), x, layers)


def _first_call(module, path, x):
    """The output of the first call of submodule ``path`` in ``module(x)``."""
    seen = []
    handle = module.get_submodule(path).register_forward_hook(
        lambda _m, _i, out: seen.append(out.detach().clone())
    )
    try:
        with torch.no_grad():
            module(x)
    finally:
        handle.remove()
    return seen[0].flatten(1)


# -- 1. a cached graph is never the forward pass of an older module -----------------
class Flag(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros(4))
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)
        self.negate = False
        self.scales = [1.0, 1.0]
        self.offset = torch.zeros(6)  # a plain tensor attribute

    def forward(self, x):
        h = self.fc(x - self.mean) * self.scales[0]
        if self.negate:  # a Python attribute: fx bakes the branch taken
            h = -h
        return self.out(torch.relu(h + self.offset))


def _true_relu(m, x):
    with torch.no_grad():
        h = m.fc(x - m.mean) * m.scales[0]
        return torch.relu((-h if m.negate else h) + m.offset)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: setattr(m, "negate", True),
        lambda m: setattr(m, "mean", torch.full((4,), 0.5)),  # buffer reassigned
        lambda m: m.scales.__setitem__(0, 3.0),  # a list changed in place
        lambda m: setattr(m, "offset", torch.ones(6)),
        lambda m: setattr(m, "fc", nn.Linear(4, 6)),  # a submodule replaced
    ],
    ids=["flag", "buffer", "list", "tensor", "submodule"],
)
def test_a_changed_module_is_traced_again(change):
    torch.manual_seed(0)
    m, x = Flag().eval(), torch.randn(5, 4)
    (before,) = _outputs(m, x, ["relu"])
    torch.testing.assert_close(before, _true_relu(m, x))
    change(m)
    (after,) = _outputs(m, x, ["relu"])
    torch.testing.assert_close(after, _true_relu(m, x))
    assert not torch.equal(before, after)


def test_an_unchanged_module_reuses_its_extractor():
    m, x = Flag().eval(), torch.randn(3, 4)
    from skdknn._graph import layer_extractor

    first = layer_extractor(m, ["relu"])
    with torch.no_grad():
        m.fc.weight.mul_(2)  # weights are read when the graph runs: no new trace
    assert layer_extractor(m, ["relu"]) is first
    torch.testing.assert_close(_outputs(m, x, ["relu"])[0], _true_relu(m, x))


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(x) + torch.tensor([1.0, 2.0, 3.0])


def test_tracing_leaves_the_module_unchanged():
    m = Constant().eval()
    before = set(vars(m))
    layer_names(m)
    assert set(vars(m)) == before  # fx would add _tensor_constant0 to the module
    x = torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(_outputs(m, x, ["add"])[0], m(x))


def test_hooks_of_the_network_itself_are_run():
    torch.manual_seed(0)
    m, x = Flag().eval(), torch.randn(5, 4)
    m.register_forward_pre_hook(lambda _m, args: (args[0] * 10,))
    with torch.no_grad():
        expected = m(x)
    (got,) = _outputs(m, x, ["out"])
    torch.testing.assert_close(got, expected)


# -- 2. in-place operations whose result is unused still run ------------------------
class InPlace(nn.Module):
    def __init__(self, mode):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)
        self.mode = mode

    def forward(self, x):
        h = self.fc(x)
        if self.mode == "clamp_":
            h.clamp_(min=0)
        elif self.mode == "add_":
            h.add_(1.0)
        elif self.mode == "relu_":
            torch.relu_(h)
        elif self.mode == "out=":
            torch.mul(h, 2.0, out=h)
        elif self.mode == "setitem":
            h[:, :2] = 0.0
        return self.out(h)


@pytest.mark.parametrize("mode", ["clamp_", "add_", "relu_", "out=", "setitem"])
def test_inplace_operations_with_unused_results_run(mode):
    torch.manual_seed(0)
    m, x = InPlace(mode).eval(), torch.randn(5, 4)
    with torch.no_grad():
        expected_fc, expected = m.fc(x), m(x)
    fc, out = _outputs(m, x, ["fc", "out"])
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(fc, expected_fc, rtol=0, atol=0)  # read before


# -- 3. a name denotes one tensor; a module's path denotes that module --------------
class FunctionThenModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 3)
        self.relu = nn.ReLU()
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))  # a function named like the module below
        return self.out(self.relu(self.fc2(h)))


class UntraceableFunctionThenModule(FunctionThenModule):
    def forward(self, x):
        if x.sum() > -1e9:  # fx cannot trace this: hooks
            pass
        return super().forward(x)


class PathLikeASuffix(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.relu = nn.ReLU()
        self.relu_1 = nn.Linear(6, 3)  # a module whose path looks generated
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        h = self.relu(self.relu(self.fc1(x) - 0.5) - 0.1)  # relu called twice
        return self.out(self.relu_1(h))


@pytest.mark.parametrize(
    "net", [FunctionThenModule, UntraceableFunctionThenModule, PathLikeASuffix]
)
def test_a_module_path_names_the_module_output(net):
    torch.manual_seed(0)
    m, x = net().eval(), torch.randn(5, 4)
    names = layer_names(m)
    assert len(names) == len(set(names)), names
    paths = [p for p, _ in m.named_modules() if p]
    assert set(paths) <= set(names)
    got = _outputs(m, x, paths)
    for path, out in zip(paths, got, strict=True):
        torch.testing.assert_close(out, _first_call(m, path, x), rtol=0, atol=0)


def test_a_function_named_like_a_module_gets_a_suffix():
    torch.manual_seed(0)
    m, x = FunctionThenModule().eval(), torch.randn(5, 4)
    assert layer_names(m) == ["x", "fc1", "relu_1", "fc2", "relu", "out"]
    (function,) = _outputs(m, x, ["relu_1"])
    with torch.no_grad():
        torch.testing.assert_close(function, torch.relu(m.fc1(x)))


def test_a_generated_name_is_never_a_module_path():
    torch.manual_seed(0)
    m, x = PathLikeASuffix().eval(), torch.randn(5, 4)
    names = layer_names(m)
    assert names == ["x", "fc1", "sub", "relu", "sub_1", "relu_2", "relu_1", "out"]
    second, module = _outputs(m, x, ["relu_2", "relu_1"])
    with torch.no_grad():
        h = torch.relu(torch.relu(m.fc1(x) - 0.5) - 0.1)
    torch.testing.assert_close(second, h)
    torch.testing.assert_close(module, m.relu_1(h))


# -- 4. hooks see a second call on any row of any batch -----------------------------
class SometimesTwice(nn.Module):
    """Calls ``relu`` twice only for batches whose mean is above 0.3."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 6)
        self.relu = nn.ReLU()
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        if x.mean() > 0.3:
            h = self.relu(self.fc2(self.relu(self.fc1(x))))
        else:
            h = self.relu(self.fc2(self.fc1(x)))
        return self.out(h)


def test_hooks_refuse_a_module_called_twice_in_a_later_batch():
    m = SometimesTwice().eval()
    assert layer_names(m) == ["fc1", "fc2", "relu", "out"]
    dark, bright = torch.zeros(1, 4), torch.ones(1, 4)
    with pytest.raises(
        ValueError, match="'relu' of SometimesTwice is a module called 2"
    ):
        _outputs(m, torch.cat([dark, bright, bright]), ["relu"])
    X = np.concatenate([np.zeros((4, 4)), np.ones((4, 4))]).astype(np.float32)
    with pytest.raises(ValueError, match="called 2 times"):
        extract_activations(m, X, ["relu"], batch_size=4)  # first batch: once
    (once,) = _outputs(m, dark, ["relu"])  # a batch that calls it once is fine
    with torch.no_grad():
        torch.testing.assert_close(once, m.relu(m.fc2(m.fc1(dark))))


# -- 5. a module that returns a tuple -----------------------------------------------
class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 3, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        o, _ = self.rnn(x.reshape(-1, 2, 2))
        if o.sum() > -1e9:  # untraceable: hooks
            pass
        return self.fc(o.reshape(len(x), -1))


class TracedRecurrent(Recurrent):
    def forward(self, x):
        o, _ = self.rnn(x.reshape(-1, 2, 2))
        return self.fc(torch.relu(o).reshape(len(x), -1)) + 0 * o.sum()


@pytest.mark.parametrize("net", [Recurrent, TracedRecurrent])
def test_a_layer_that_outputs_a_tuple_is_refused_clearly(net):
    m, x = net().eval(), torch.randn(3, 4)
    with pytest.raises(ValueError, match="Layer 'rnn' of .* outputs a tuple, not a"):
        _outputs(m, x, ["rnn", "fc"])


# -- 6. a trace in one thread and forward passes in another -------------------------
#: thread id -> (started, release): the Pause module waits in that thread's trace
_GATES: dict = {}


class Pause(nn.Module):
    """Traced through (not a leaf): its forward runs inside the trace, where it
    holds the trace open until the other thread has run its forward passes."""

    def forward(self, x):
        gate = _GATES.get(threading.get_ident())
        if gate is not None:
            gate[0].set()
            assert gate[1].wait(30), "the other thread never released the trace"
        return x


class Paused(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.w = nn.Parameter(torch.randn(5, 3))  # read through __getattr__
        self.pause = Pause()

    def forward(self, x):
        return torch.relu(self.pause(self.fc(x))) @ self.w


def test_forward_passes_in_another_thread_while_a_network_is_traced():
    # torch.fx patches nn.Module.__call__ / __getattr__ process-wide while it
    # traces; a GridSearchCV on joblib's threading backend or a Dask worker with
    # 2 threads runs one fold's forward pass while another fold traces. Before,
    # the forward of the network being traced ran into the trace (its output a
    # Proxy, its operations added to the other thread's graph) and any other
    # network failed with "module is not installed as a submodule".
    torch.manual_seed(0)
    net, other, x = Paused().eval(), nn.Sequential(nn.Linear(4, 2)), torch.randn(6, 4)
    with torch.no_grad():
        expected, expected_other = net(x), other(x)
    names_alone = layer_names(Paused())
    found: dict = {}

    def trace():
        _GATES[threading.get_ident()] = (threading.Event(), threading.Event())
        started.set()
        try:
            found["names"] = layer_names(net)
        except BaseException as exc:  # reported by the main thread
            found["error"] = exc

    started = threading.Event()
    thread = threading.Thread(target=trace)
    thread.start()
    try:
        assert started.wait(30)
        gate = next(iter(_GATES.values()))
        assert gate[0].wait(30), "the trace never reached the Pause module"
        with torch.no_grad():
            out, out_other = net(x), other(x)
    finally:
        for g in _GATES.values():
            g[1].set()
        thread.join(30)
        _GATES.clear()
    assert "error" not in found, found.get("error")
    assert isinstance(out, torch.Tensor) and isinstance(out_other, torch.Tensor)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(out_other, expected_other, rtol=0, atol=0)
    # the trace itself is the one made alone, and extracts the right tensors
    assert found["names"] == names_alone
    layers = ["fc", "relu", "matmul"]
    assert set(layers) <= set(names_alone)
    acts = _outputs(net, x, layers)
    torch.testing.assert_close(acts[-1], expected, rtol=0, atol=0)
