"""Reference networks: shapes, DkNN layers and layer lookup."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from skdknn._activations import extract_activations
from skdknn._graph import resolve_layer
from skdknn.nets import (
    MLP,
    BatchNormCNN,
    DkNNPaperCNN,
    LeNet5,
    default_layers,
    layer_names,
)


def _widths(module, input_shape, layers=None):
    layers = layers or default_layers(module)
    X = torch.rand(3, *input_shape).numpy()
    acts = extract_activations(module, X, layers, batch_size=2)
    return [a.shape[1] for a in acts]


def test_paper_cnn_layer_widths():
    # DESIGN.md section 3: 12,544 / 3,200 / 128 / 10 dimensions on 28x28 input
    assert _widths(DkNNPaperCNN(), (1, 28, 28)) == [12544, 3200, 128, 10]


def test_paper_cnn_on_svhn_sized_input():
    net = DkNNPaperCNN(input_shape=(3, 32, 32), n_classes=10)
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    # 64 x 16 x 16, 128 x 6 x 6, 128 x 2 x 2, logits
    assert _widths(net, (3, 32, 32)) == [16384, 4608, 512, 10]


def test_batchnorm_cnn_uses_batchnorm_outputs():
    net = BatchNormCNN()
    assert default_layers(net) == ["bn1", "bn2", "bn3"]
    # 64 x 14 x 14, 128 x 7 x 7, 256 x 3 x 3
    assert _widths(net, (1, 28, 28)) == [12544, 6272, 2304]
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)


def test_lenet5_and_mlp():
    assert _widths(LeNet5(), (1, 28, 28)) == [6 * 28 * 28, 16 * 10 * 10, 120, 84, 10]
    mlp = MLP(n_features=7, n_classes=4, hidden_layer_sizes=(5, 3))
    assert default_layers(mlp) == ["relu1", "relu2", "logits"]
    assert _widths(mlp, (7,)) == [5, 3, 4]


@pytest.mark.parametrize("cls", [DkNNPaperCNN, BatchNormCNN, LeNet5])
def test_images_too_small_are_rejected(cls):
    with pytest.raises(ValueError, match=r"input_shape \(channels, height, width\)"):
        cls(input_shape=(1, 4, 4))


def test_default_layers_of_a_plain_sequential():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    # activations only; the last module is already one of them
    assert default_layers(net) == ["1", "3"]
    # a single module: its traced output (the logits) is a layer
    assert default_layers(nn.Linear(3, 2)) == ["linear"]

    class Pair(nn.Module):  # returns no single tensor: no logits, no activation
        def forward(self, x):
            return x + 1, x - 1

    with pytest.raises(ValueError, match="no layer that could be used"):
        default_layers(Pair())


def test_resolve_layer_by_path_and_short_name():
    net = DkNNPaperCNN()
    assert resolve_layer(net, "relu2") == "features.relu2"
    assert resolve_layer(net, "features.relu2") == "features.relu2"
    assert "features.conv1" in layer_names(net)
    with pytest.raises(ValueError, match="Unknown layer 'relu9'.*'features.relu1'"):
        resolve_layer(net, "relu9")
    twice = nn.Sequential(
        OrderedDict(
            a=nn.Sequential(OrderedDict(act=nn.ReLU())),
            b=nn.Sequential(OrderedDict(act=nn.ReLU())),
        )
    )
    with pytest.raises(ValueError, match=r"'act' is ambiguous.*'a.act', 'b.act'"):
        resolve_layer(twice, "act")
    assert resolve_layer(twice, "b.act") == "b.act"


def test_layer_not_called_in_forward_is_reported():
    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(3, 2)
            self.unused = nn.Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(ValueError, match=r"'unused' .* never calls .*no output"):
        extract_activations(
            Skips(), torch.zeros(2, 3).numpy(), ["used", "unused"], batch_size=4
        )


def test_activations_restore_training_mode_and_copy_before_inplace_ops():
    # an in-place ReLU after the hooked Linear would overwrite a shared buffer
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    # fixed weights: with torch's global random ones, whether a pre-activation is
    # negative depended on the tests run before (the check below then failed)
    with torch.no_grad():
        weight = [[1.0, 0, 0], [0, 1, 0], [0, 0, -1], [1, 1, 1]]
        net[0].weight.copy_(torch.tensor(weight))
        net[0].bias.zero_()
    net.train()
    X = torch.tensor([[1.0, -2.0, 3.0], [-1.0, 0.5, 2.0]]).numpy()
    (pre,) = extract_activations(net, X, ["0"], batch_size=2)
    with torch.no_grad():
        expected = net[0](torch.from_numpy(X)).numpy()
    torch.testing.assert_close(torch.from_numpy(pre), torch.from_numpy(expected))
    assert (pre < 0).any()  # the pre-activation kept its negative values
    assert net.training


@pytest.mark.parametrize("size", [8, 14, 28])
def test_batchnorm_cnn_is_built_without_touching_its_statistics(size):
    # Before: the width of the dense layer was found by a forward pass in
    # training mode, which updated every BatchNorm's running statistics of a
    # fresh network and, from a 1x1 map on (sizes 8 to 15), raised "Expected
    # more than 1 value per channel when training" for sizes the docstring allows.
    net = BatchNormCNN(input_shape=(1, size, size))
    fresh = nn.BatchNorm2d(1)
    for bn in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(
            bn.running_mean, fresh.running_mean.expand_as(bn.running_mean)
        )
        assert torch.equal(bn.running_var, fresh.running_var.expand_as(bn.running_var))
        assert int(bn.num_batches_tracked) == 0
    assert net.training
    assert net(torch.zeros(2, 1, size, size)).shape == (2, 10)
