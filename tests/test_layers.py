"""Layers are graph nodes: names, exact outputs on ResNets, hooks fallback."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.frozen import FrozenEstimator
from torch import nn

from skdknn import DeepKNNClassifier
from skdknn._activations import extract_activations, forward_to_layers
from skdknn.nets import CifarResNet18, DkNNPaperCNN, default_layers, layer_names


def _torchvision():
    """torchvision's pure-Python parts (models, feature extraction).

    Importing torchvision fails against the CPU torch of this environment
    ("operator torchvision::nms does not exist") while registering its compiled
    operators' meta kernels; tests only, and no library code, stub that module.
    """
    sys.modules.setdefault(
        "torchvision._meta_registrations",
        types.ModuleType("torchvision._meta_registrations"),
    )
    return pytest.importorskip("torchvision")


def _outputs(module, x, layers):
    with torch.no_grad():
        return forward_to_layers(module.eval(), x, layers)


@pytest.mark.slow
def test_resnet18_stage_outputs_are_exact():
    tv = _torchvision()
    from torchvision.models.feature_extraction import (
        create_feature_extractor,
        get_graph_node_names,
    )

    torch.manual_seed(0)
    net = tv.models.resnet18(num_classes=10).eval()  # random weights, no download
    x = torch.rand(2, 3, 32, 32)

    names = layer_names(net)
    assert len(names) == len(set(names))  # every name denotes one tensor
    _, eval_names = get_graph_node_names(net)
    assert set(eval_names) <= set(names)  # torchvision's names, same meaning
    # ... plus the outputs of the blocks and stages it does not list
    assert {"layer1", "layer1.0", "layer4.1"} <= set(names)
    assert default_layers(net) == ["layer1", "layer2", "layer3", "layer4", "fc"]

    stages = ["layer1", "layer2", "layer3", "layer4", "fc"]
    got = _outputs(net, x, [*stages, "layer1.0.relu_1", "layer1.0.relu"])
    with torch.no_grad():  # the stage outputs, computed directly
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        direct = []
        for stage in stages[:4]:
            h = getattr(net, stage)(h)
            direct.append(h)
        direct.append(net.fc(torch.flatten(net.avgpool(h), 1)))
        block = net.layer1[0]
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        mid_block = block.relu(block.bn1(block.conv1(stem)))
    for out, ref in zip(got, direct, strict=False):
        torch.testing.assert_close(out, ref.flatten(1), rtol=0, atol=0)
    # the block's ReLU runs twice: its second call is the block output, its first
    # the mid-block tensor (hooks used to return that one for "layer1.0.relu")
    torch.testing.assert_close(got[5], _outputs(net, x, ["layer1.0"])[0])
    torch.testing.assert_close(got[6], mid_block.flatten(1), rtol=0, atol=0)
    assert not torch.equal(got[5], got[6])

    extractor = create_feature_extractor(net, return_nodes=stages)
    with torch.no_grad():
        reference = extractor(x)
    for name, out in zip(stages, got, strict=False):
        torch.testing.assert_close(out, reference[name].flatten(1), rtol=0, atol=0)


def test_residual_sum_is_read_before_the_inplace_relu():
    torch.manual_seed(0)
    net = CifarResNet18(width=4).eval()
    x = torch.rand(3, 3, 32, 32)
    (added,) = _outputs(net, x, ["layer1.0.add"])
    with torch.no_grad():
        stem = net.relu(net.bn1(net.conv1(x)))
        block = net.layer1[0]
        expected = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(stem)))))
        expected = expected + stem
    torch.testing.assert_close(added, expected.flatten(1), rtol=0, atol=0)
    assert (added < 0).any()  # not overwritten by the in-place ReLU that follows


@pytest.mark.slow
def test_cifar_resnet18_stage_widths():
    net = CifarResNet18()
    assert net.dknn_layers == ("layer1", "layer2", "layer3", "layer4", "fc")
    outputs = _outputs(net, torch.rand(1, 3, 32, 32), net.dknn_layers)
    widths = [a.shape[1] for a in outputs]
    assert widths == [65536, 32768, 16384, 8192, 10]


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 6)
        self.act = nn.Tanh()
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        h = self.act(F.relu(self.fc2(h)) - 0.5)
        return self.out(self.act(h))


def test_functional_activations_and_each_call_are_layers():
    net = Functional()
    names = layer_names(net)
    assert names == ["x", "fc1", "relu", "fc2", "relu_1", "sub", "act", "act_1", "out"]
    assert default_layers(net) == ["relu", "relu_1", "act", "act_1", "out"]
    x = torch.randn(5, 4)
    relu, relu_1, act, act_1 = _outputs(net, x, ["relu", "relu_1", "act", "act_1"])
    with torch.no_grad():
        h1 = torch.relu(net.fc1(x))
        h2 = F.relu(net.fc2(h1))
        t1 = torch.tanh(h2 - 0.5)
    torch.testing.assert_close(relu, h1)
    torch.testing.assert_close(relu_1, h2)
    torch.testing.assert_close(act, t1)
    torch.testing.assert_close(act_1, torch.tanh(t1))


def test_layer_names_are_unique():
    for net in (DkNNPaperCNN(), CifarResNet18(width=4), Functional()):
        names = layer_names(net)
        assert len(names) == len(set(names)), names


def test_forward_pass_stops_after_the_last_layer():
    net = DkNNPaperCNN()
    calls = []
    net.logits.register_forward_hook(lambda *_: calls.append("logits"))
    _outputs(net, torch.rand(2, 1, 28, 28), ["relu2"])
    assert calls == []
    _outputs(net, torch.rand(2, 1, 28, 28), ["relu2", "logits"])
    assert calls == ["logits"]


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.ReLU()
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        h = self.act(self.fc(x))
        if h.sum() > -1:  # always true, but fx cannot know
            h = self.act(h - 0.1)
        return self.out(h)


def test_hooks_fallback_refuses_a_reused_module():
    net = Untraceable()
    assert layer_names(net) == ["fc", "act", "out"]  # module paths
    x = torch.randn(4, 3)
    (fc,) = _outputs(net, x, ["fc"])  # a module called once works with a hook
    torch.testing.assert_close(fc, net.fc(x).detach())
    with pytest.raises(ValueError) as error:
        _outputs(net, x, ["act"])
    message = str(error.value)
    assert "'act'" in message and "called 2 times" in message
    assert "torch.fx" in message and "'act_1'" in message
    # also when the forward pass would stop right after the first call
    with pytest.raises(ValueError, match="called 2 times"):
        extract_activations(net, x.numpy(), ["fc", "act"], batch_size=2)


def test_every_name_of_a_layer_works_in_kneighbors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 1, 28, 28)).astype(np.float32)
    y = np.repeat([0, 1], 60)
    net = DkNNPaperCNN().eval()
    clf = DeepKNNClassifier(
        net=FrozenEstimator(net), layers=["relu3", "logits"], n_neighbors=3,
        calibration_size=20, random_state=0,
    ).fit(X, y)  # fmt: skip
    short = clf.kneighbors(X[:4], layer="relu3")
    full = clf.kneighbors(X[:4], layer="features.relu3")
    np.testing.assert_array_equal(short[1], full[1])
    with pytest.raises(ValueError, match="Unknown layer 'relu1'"):
        clf.kneighbors(X[:4], layer="relu1")  # a layer of the net, not searched
