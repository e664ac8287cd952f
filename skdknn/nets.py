"""Reference networks of the DkNN and AdvKNN papers, as plain torch modules.

Every network names its modules so that hidden layers can be chosen by name, and
declares the layers the DkNN uses by default in its ``dknn_layers`` attribute.

- :class:`DkNNPaperCNN`: Papernot & McDaniel (2018), the DkNN paper's CNN;
- :class:`BatchNormCNN`: the deeper BatchNorm CNN of the thesis ("Kaggle");
- :class:`LeNet5`: LeCun et al. (1998), for transferability experiments;
- :class:`MLP`: a small perceptron for tabular input;
- :class:`CifarResNet18`: ResNet-18 (He et al., 2016) for 32x32 images.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ._eval import eval_mode
from ._graph import default_layers, layer_names

__all__ = [
    "MLP",
    "BatchNormCNN",
    "CifarResNet18",
    "DkNNPaperCNN",
    "LeNet5",
    "default_layers",
    "layer_names",
]


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    """Width of ``features``' flattened output for one input of ``input_shape``.

    Run in eval mode: in training mode BatchNorm would update its running
    statistics, and refuse one value per channel (a 1x1 map after the pooling).
    """
    with torch.no_grad(), eval_mode(features):
        out = features(torch.zeros(1, *input_shape))
    return int(out.numel())


def _check_image_shape(input_shape: Sequence[int], name: str, minimum: int) -> None:
    if len(input_shape) != 3 or min(input_shape[1:]) < minimum:
        raise ValueError(
            f"{name} needs input_shape (channels, height, width) with height and "
            f"width >= {minimum}; got {tuple(input_shape)}."
        )


class DkNNPaperCNN(nn.Module):
    """The CNN of the DkNN paper (Papernot & McDaniel, 2018).

    Conv(64, 8x8, stride 2, padding 3) - ReLU - Conv(128, 6x6, stride 2) - ReLU -
    Conv(128, 5x5, stride 1) - ReLU - Linear(-> n_classes). On 28x28 input the DkNN
    layers ``relu1``, ``relu2``, ``relu3`` and ``logits`` have 12,544 / 3,200 / 128 /
    10 dimensions.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
        ``(channels, height, width)``; height and width must be at least 24.
    n_classes : int, default=10
        Number of outputs (logits).

    Examples
    --------
    >>> import torch
    >>> net = DkNNPaperCNN()
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> net.dknn_layers
    ('relu1', 'relu2', 'relu3', 'logits')
    """

    dknn_layers = ("relu1", "relu2", "relu3", "logits")

    def __init__(
        self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10
    ) -> None:
        super().__init__()
        _check_image_shape(input_shape, "DkNNPaperCNN", minimum=24)
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(input_shape[0], 64, 8, 2, 3))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("conv2", nn.Conv2d(64, 128, 6, 2))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("conv3", nn.Conv2d(128, 128, 5, 1))
        self.features.add_module("relu3", nn.ReLU())
        self.flatten = nn.Flatten()
        self.logits = nn.Linear(_flat_size(self.features, input_shape), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.flatten(self.features(x)))


class BatchNormCNN(nn.Module):
    """The deeper BatchNorm CNN of the thesis (the "Kaggle" MNIST model).

    Conv64-Conv64-MaxPool-BN-Conv128-Conv128-MaxPool-BN-Conv256-MaxPool-BN-Dense512-
    Dense(n_classes), 3x3 kernels with padding 1 and ReLU. The DkNN uses the three
    BatchNorm outputs ``bn1``, ``bn2``, ``bn3``.

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
        ``(channels, height, width)``; height and width must be at least 8.
    n_classes : int, default=10
        Number of outputs (logits).

    Examples
    --------
    >>> import torch
    >>> BatchNormCNN()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    dknn_layers = ("bn1", "bn2", "bn3")

    def __init__(
        self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10
    ) -> None:
        super().__init__()
        _check_image_shape(input_shape, "BatchNormCNN", minimum=8)
        self.features = nn.Sequential()
        widths = [(input_shape[0], 64, 64), (64, 128, 128), (128, 256)]
        for block, chans in enumerate(widths, start=1):
            for i, (c_in, c_out) in enumerate(pairwise(chans), start=1):
                self.features.add_module(
                    f"conv{block}_{i}", nn.Conv2d(c_in, c_out, 3, padding=1)
                )
                self.features.add_module(f"relu{block}_{i}", nn.ReLU())
            self.features.add_module(f"pool{block}", nn.MaxPool2d(2))
            self.features.add_module(f"bn{block}", nn.BatchNorm2d(chans[-1]))
        self.flatten = nn.Flatten()
        self.dense = nn.Linear(_flat_size(self.features, input_shape), 512)
        self.relu_dense = nn.ReLU()
        self.logits = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.relu_dense(self.dense(self.flatten(self.features(x))))
        return self.logits(hidden)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) with ReLU and max pooling.

    Conv(6, 5x5, padding 2) - ReLU - MaxPool - Conv(16, 5x5) - ReLU - MaxPool -
    Linear(120) - ReLU - Linear(84) - ReLU - Linear(n_classes).

    Parameters
    ----------
    input_shape : tuple of int, default=(1, 28, 28)
        ``(channels, height, width)``; height and width must be at least 12.
    n_classes : int, default=10
        Number of outputs (logits).

    Examples
    --------
    >>> import torch
    >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    dknn_layers = ("relu1", "relu2", "relu3", "relu4", "logits")

    def __init__(
        self, input_shape: Sequence[int] = (1, 28, 28), n_classes: int = 10
    ) -> None:
        super().__init__()
        _check_image_shape(input_shape, "LeNet5", minimum=12)
        self.features = nn.Sequential()
        self.features.add_module("conv1", nn.Conv2d(input_shape[0], 6, 5, padding=2))
        self.features.add_module("relu1", nn.ReLU())
        self.features.add_module("pool1", nn.MaxPool2d(2))
        self.features.add_module("conv2", nn.Conv2d(6, 16, 5))
        self.features.add_module("relu2", nn.ReLU())
        self.features.add_module("pool2", nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(_flat_size(self.features, input_shape), 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.logits = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.relu3(self.fc1(self.flatten(self.features(x))))
        return self.logits(self.relu4(self.fc2(hidden)))


class MLP(nn.Module):
    """A small multi-layer perceptron for flat (tabular) input.

    Linear - ReLU per hidden layer, then Linear(-> n_classes). The DkNN uses every
    ReLU output and the logits.

    Parameters
    ----------
    n_features : int
        Width of the input rows.
    n_classes : int
        Number of outputs (logits).
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the hidden layers.

    Examples
    --------
    >>> import torch
    >>> net = MLP(n_features=4, n_classes=3)
    >>> net(torch.zeros(5, 4)).shape
    torch.Size([5, 3])
    >>> net.dknn_layers
    ('relu1', 'relu2', 'logits')
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden_layer_sizes: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.hidden = nn.Sequential()
        width = n_features
        for i, size in enumerate(hidden_layer_sizes, start=1):
            self.hidden.add_module(f"fc{i}", nn.Linear(width, size))
            self.hidden.add_module(f"relu{i}", nn.ReLU())
            width = size
        self.logits = nn.Linear(width, n_classes)
        self.dknn_layers = (
            *(f"relu{i}" for i in range(1, len(hidden_layer_sizes) + 1)),
            "logits",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(self.hidden(x.flatten(1)))


class _BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (ResNet-18).

    The shortcut is the identity, or a strided 1x1 convolution with batch norm when
    the block changes the resolution or the width. The block's ReLU module runs
    twice (after the first convolution and after the residual sum), as in
    torchvision: its calls are the layers ``relu`` and ``relu_1`` of the block.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet18(nn.Module):
    """ResNet-18 (He et al., 2016) adapted to 32x32 images, as used on CIFAR-10.

    The ImageNet stem (7x7 stride-2 convolution and max pooling) is replaced by one
    3x3 stride-1 convolution, so the four stages work at 32, 16, 8 and 4 pixels.
    Modules are named as in torchvision's ``resnet18`` (``conv1``, ``bn1``,
    ``relu``, ``layer1`` .. ``layer4``, ``avgpool``, ``fc``). The DkNN layers are
    the stage outputs and the logits: on 3x32x32 input with ``width=64``,
    ``layer1`` .. ``layer4`` have 65,536 / 32,768 / 16,384 / 8,192 values.

    Parameters
    ----------
    input_shape : tuple of int, default=(3, 32, 32)
        ``(channels, height, width)``; height and width must be at least 8.
    n_classes : int, default=10
        Number of outputs (logits).
    width : int, default=64
        Channels of the first stage (doubled at each of the next three stages);
        a smaller width gives a smaller, faster network of the same shape.

    References
    ----------
    K. He, X. Zhang, S. Ren and J. Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016.

    Examples
    --------
    >>> import torch
    >>> net = CifarResNet18(width=8)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> net.dknn_layers
    ('layer1', 'layer2', 'layer3', 'layer4', 'fc')
    """

    dknn_layers = ("layer1", "layer2", "layer3", "layer4", "fc")

    def __init__(
        self,
        input_shape: Sequence[int] = (3, 32, 32),
        n_classes: int = 10,
        width: int = 64,
    ) -> None:
        super().__init__()
        _check_image_shape(input_shape, "CifarResNet18", minimum=8)
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, c_in = [], width
        for stage in range(4):
            c_out = width * 2**stage
            stride = 1 if stage == 0 else 2
            stages.append(
                nn.Sequential(
                    _BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)
                )
            )
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
