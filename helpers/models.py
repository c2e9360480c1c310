"""The course's small reference networks, sized for 28x28 grey images (Fashion-MNIST, MNIST).

Each is a short ``nn.Sequential`` or module whose layers read like the diagram in the lesson
that uses it, so that pruning, folding and quantization can find their layers by name.
"""
import torch
from torch import nn


def _conv_bn_relu(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def small_vgg(width=32, num_classes=10, in_channels=1):
    """A VGG-like net: two stages of two 3x3 conv-BN-ReLU and a 2x2 max-pool, then two linear layers.

    ``width`` is the channel count of the first stage (the second has twice as many); a student
    for distillation is the same net at a smaller width. For a 28x28 input the feature map
    entering the classifier is ``2 * width`` x 7 x 7.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a whole number >= 1, got {width!r}")
    w1, w2 = width, 2 * width
    return nn.Sequential(
        *_conv_bn_relu(in_channels, w1), *_conv_bn_relu(w1, w1), nn.MaxPool2d(2),
        *_conv_bn_relu(w1, w2), *_conv_bn_relu(w2, w2), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(w2 * 7 * 7, 256), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(256, num_classes),
    )


# ---------------------------------------------------------------- small nets from efficient blocks

def _block(kind, c_in, c_out, stride):
    """One block of ``kind`` from torchvision's own implementations (notebook 04 builds each from scratch)."""
    from torchvision.models import mobilenetv2, resnet, shufflenetv2, squeezenet

    if kind == "plain":
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
    if kind == "resnet":
        shortcut = None
        if stride != 1 or c_in != c_out:
            shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        return resnet.BasicBlock(c_in, c_out, stride, downsample=shortcut)
    if kind == "mobilenet_v2":
        return mobilenetv2.InvertedResidual(c_in, c_out, stride, expand_ratio=6)
    if kind == "shufflenet_v2":
        return shufflenetv2.InvertedResidual(c_in, c_out, stride)
    if kind == "squeezenet":
        fire = squeezenet.Fire(c_in, c_out // 8, c_out // 2, c_out // 2)
        return nn.Sequential(nn.MaxPool2d(2), fire) if stride == 2 else fire
    raise ValueError(f"unknown block {kind!r}; choose one of {BLOCK_TYPES}")


BLOCK_TYPES = ("plain", "resnet", "mobilenet_v2", "shufflenet_v2", "squeezenet")


def small_net(block="plain", width=1.0, num_classes=10, in_channels=1):
    """A small network for 28x28 images made of one kind of block, ending in global average pooling.

    Stem (3x3 conv, 28x28) -> two stages, each a stride-2 block and a stride-1 block (14x14, 7x7)
    -> global average pooling -> one linear layer. Channels are 16, 32, 64 times ``width``
    (rounded to a multiple of 8, which every block type needs).
    """
    if block not in BLOCK_TYPES:
        raise ValueError(f"unknown block {block!r}; choose one of {BLOCK_TYPES}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be a number > 0, got {width!r}")
    c0, c1, c2 = (max(8, int(round(c * width / 8)) * 8) for c in (16, 32, 64))
    return nn.Sequential(
        *_conv_bn_relu(in_channels, c0),
        _block(block, c0, c1, 2), _block(block, c1, c1, 1),
        _block(block, c1, c2, 2), _block(block, c2, c2, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, num_classes),
    )


# ---------------------------------------------------------------- blocks with parallel branches (notebooks 09, 10)

def _conv_bn(c_in, c_out, kernel_size, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(c_out))


class RepVGGBlock(nn.Module):
    """Ding et al. (2021)'s training-time block: 3x3 conv-BN + 1x1 conv-BN (+ a BN on the identity when
    the shapes allow), summed, then ReLU. ``helpers.compress.reparameterize`` turns it into one 3x3 conv."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv3, self.conv1 = _conv_bn(c_in, c_out, 3, stride), _conv_bn(c_in, c_out, 1, stride)
        self.identity = nn.BatchNorm2d(c_out) if c_in == c_out and stride == 1 else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.conv3(x) + self.conv1(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.relu(out)


class TreeBlock(nn.Module):
    """An Inception-like block: parallel branches on the same input, concatenated along channels, then ReLU.

    ``branch1`` is a 1x1 conv-BN, ``branch3`` a 3x3 conv-BN, ``deep`` a 1x1 conv-BN-ReLU followed by a
    3x3 conv-BN, and, when ``c_pool > 0``, ``pool`` a 3x3 average pool (stride 1, padding 1, counting
    the padded zeros) followed by a 1x1 conv-BN: Inception's pooling branch (GoogLeNet has a max pool
    there; Inception-v3, as torchvision builds it, this average pool, which keeps the branch linear).
    Output channels: ``c1 + c3 + c_deep + c_pool``, in that order. All branches but ``deep`` are linear
    and merge exactly into one 3x3 conv; the ReLU inside ``deep`` makes it non-linear, so
    ``helpers.compress.merge_tree_blocks`` fits it by least squares.
    """

    def __init__(self, c_in, c1, c3, c_reduce, c_deep, c_pool=0):
        super().__init__()
        self.branch1, self.branch3 = _conv_bn(c_in, c1, 1), _conv_bn(c_in, c3, 3)
        self.deep = nn.Sequential(*_conv_bn(c_in, c_reduce, 1), nn.ReLU(inplace=True), *_conv_bn(c_reduce, c_deep, 3))
        self.pool = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), *_conv_bn(c_in, c_pool, 1)) if c_pool else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        branches = [self.branch1(x), self.branch3(x), self.deep(x)]
        if self.pool is not None:
            branches.append(self.pool(x))
        return self.relu(torch.cat(branches, dim=1))


def tree_net(num_classes=10, in_channels=1):
    """The course's Inception-like "tree" net (285,922 parameters) for 28x28 images.

    3x3 stem (32 channels) -> tree block (64) -> max-pool -> tree block (128) -> 4x4 max-pool (to 3x3)
    -> Linear(1152, 200) -> Linear(200, classes). Each tree block has the four branches of
    :class:`TreeBlock` (1x1, 3x3, 1x1 -> 3x3, average pool -> 1x1). An ``nn.Sequential``, so that
    merging its tree blocks (notebook 09) leaves a plain chain of layers that pruning and quantization handle.
    """
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32),
        TreeBlock(32, 16, 24, 16, 16, c_pool=8), nn.MaxPool2d(2),
        TreeBlock(64, 32, 48, 32, 32, c_pool=16), nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(128 * 3 * 3, 200), nn.ReLU(inplace=True), nn.Dropout(0.3),
        nn.Linear(200, num_classes),
    )


# ---------------------------------------------------------------- notebook 04's references (its exercises 04.1-04.3)

def _whole_number(name, value, least):
    """Raise a ValueError unless ``value`` is a whole number >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def inverted_residual(c_in, c_out, stride=1, expand=6):
    """MobileNet V2's inverted residual block (Sandler et al., 2018), as torchvision builds it.

    1x1 expansion to ``w = c_in * expand`` channels -> BN -> ReLU6 -> depthwise 3x3 (``groups=w``,
    padding 1, ``stride``) -> BN -> ReLU6 -> 1x1 projection to ``c_out`` -> BN, with no activation after
    the projection (the linear bottleneck) and no convolution bias. With ``expand = 1`` the expansion is
    left out: the depthwise convolution filters the input itself (the first row of the paper's Table 2).
    The input is added to the output (the shortcut) only when ``stride == 1`` and ``c_in == c_out``.
    Parameters: ``w * (c_in + c_out + 13) + 2 * c_out`` (``c_in * (c_out + 11) + 2 * c_out`` when
    ``expand = 1``). Raises a ValueError unless ``c_in``, ``c_out`` and ``expand`` are whole numbers >= 1
    and ``stride`` is 1 or 2.
    """
    from torchvision.models.mobilenetv2 import InvertedResidual

    for name, value in (("c_in", c_in), ("c_out", c_out), ("expand", expand)):
        _whole_number(name, value, 1)
    if isinstance(stride, bool) or stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2 (MobileNet V2's blocks keep or halve the map), got {stride!r}")
    return InvertedResidual(c_in, c_out, stride, expand)


def squeeze_excite(c, reduction=16):
    """Hu et al. (2018)'s squeeze-and-excitation module on ``c`` channels: torchvision's ``SqueezeExcitation``.

    ``y = x * sigmoid(fc2(relu(fc1(mean of x over the map))))``, where ``fc1`` and ``fc2`` are 1x1
    convolutions with bias, from ``c`` to ``s = c // reduction`` channels and back. Parameters:
    ``2 * c * s + s + c``. Raises a ValueError unless ``c`` and ``reduction`` are whole numbers >= 1 and
    ``c // reduction`` leaves at least one channel.
    """
    from torchvision.ops import SqueezeExcitation

    _whole_number("c", c, 1)
    _whole_number("reduction", reduction, 1)
    if c // reduction < 1:
        raise ValueError(f"c // reduction = {c} // {reduction} leaves no channel for the squeeze")
    return SqueezeExcitation(c, c // reduction)
