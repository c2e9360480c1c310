"""The course's small reference networks, sized for 28x28 grey images (Fashion-MNIST, MNIST).

Each is a short ``nn.Sequential`` or module whose layers read like the diagram in the lesson
that uses it, so that pruning, folding and quantization can find their layers by name.
"""
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
