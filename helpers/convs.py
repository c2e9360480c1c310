"""Convolutions: checks of the settings readers change with sliders, and the references of notebooks 01-02.

* :func:`valid_groups`, :func:`check_groups`: a grouped convolution needs both channel counts to divide by
  the number of groups. PyTorch says so in its own words when the layer is built; these say it before, in
  a reader's terms, and list the values that would work.
* Notebook 02's references: :func:`grouped_conv` (split -> conv -> concat, as ``F.conv2d(groups=g)``),
  :func:`depthwise_separable` (MobileNet V1's block).
* Notebook 01's references: :func:`conv_output_size`, :func:`dilate_kernel`, :func:`receptive_field`.

The exercise checks (``helpers.exercises``) run the student's versions against these.
"""
import math


def valid_groups(in_channels, out_channels):
    """Every group count that divides both channel counts: the divisors of their greatest common divisor."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    common = math.gcd(in_channels, out_channels)
    return [g for g in range(1, common + 1) if common % g == 0]


def check_groups(in_channels, out_channels, groups):
    """Raise a clear ValueError unless ``groups`` divides both channel counts; returns ``groups``."""
    valid = valid_groups(in_channels, out_channels)
    if groups not in valid:
        raise ValueError(
            f"groups={groups!r} does not work with {in_channels} input and {out_channels} output channels: "
            f"each group needs a whole number of both. Choose one of {valid}."
        )
    return groups


# ---------------------------------------------------------------- notebook 02's references (its exercises 02.1, 02.2)

def grouped_conv(x, weight, groups, padding=0):
    """A grouped convolution computed by PyTorch (``F.conv2d(..., groups=groups)``), its shapes checked first.

    ``x`` is ``[N, C_in, H, W]``; ``weight`` is ``[C_out, C_in / groups, k, k]``, the shape of
    ``nn.Conv2d(C_in, C_out, k, groups=groups).weight``. Raises a ValueError when ``groups`` does not
    divide both channel counts, or when the weight's filters do not have ``C_in / groups`` channels
    (a standard convolution's weight given with ``groups > 1``, say). Notebook 02 builds the same thing
    from ordinary convolutions (split, convolve, concatenate).
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise TypeError(f"x and weight must be tensors, got {type(x).__name__} and {type(weight).__name__}")
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x is [N, C_in, H, W] and weight [C_out, C_in / groups, k, k]; got shapes "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    c_in, c_out = x.shape[1], weight.shape[0]
    check_groups(c_in, c_out, groups)
    if weight.shape[1] * groups != c_in:
        raise ValueError(f"with {c_in} input channels in {groups} groups each filter sees {c_in // groups} channels, "
                         f"so weight must be [C_out, {c_in // groups}, k, k]; got {tuple(weight.shape)}")
    return F.conv2d(x, weight, padding=padding, groups=groups)


def depthwise_separable(c_in, c_out, k=3, stride=1):
    """MobileNet V1's depthwise-separable block, from torchvision's conv-BN-ReLU unit (``Conv2dNormActivation``).

    depthwise ``k`` x ``k`` convolution (``groups=c_in``, padding ``k // 2``, ``stride``) -> BN -> ReLU ->
    pointwise 1x1 convolution -> BN -> ReLU, no convolution bias (the BN that follows has one). Its
    parameters: ``c_in * k * k + 2 * c_in + c_in * c_out + 2 * c_out``. Raises a ValueError unless
    ``c_in``, ``c_out``, ``k`` and ``stride`` are whole numbers >= 1, and unless ``k`` is odd (padding
    ``k // 2`` keeps the map's size only for an odd kernel).
    """
    from torch import nn
    from torchvision.ops.misc import Conv2dNormActivation

    for name, value in (("c_in", c_in), ("c_out", c_out), ("k", k), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if k % 2 == 0:
        raise ValueError(f"k must be odd: padding k // 2 keeps the map's size only for an odd kernel, got k={k}")
    return nn.Sequential(Conv2dNormActivation(c_in, c_in, k, stride, padding=k // 2, groups=c_in),
                         Conv2dNormActivation(c_in, c_out, 1))


# ---------------------------------------------------------------- notebook 01's references (its exercises 01.1-01.3)

def _whole(name, value, least):
    """Raise a ValueError unless ``value`` is a whole number >= ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")


def conv_output_size(n, k, stride=1, padding=0, dilation=1):
    """Output size, along one axis, of a convolution on an input of size ``n`` (PyTorch's ``Conv2d`` formula).

    ``floor((n + 2 * padding - dilation * (k - 1) - 1) / stride) + 1``: the dilated kernel spans
    ``dilation * (k - 1) + 1`` pixels, and it is placed every ``stride`` pixels on the padded input. Raises
    a ValueError unless ``n``, ``k``, ``stride`` and ``dilation`` are whole numbers >= 1 and ``padding`` >= 0,
    or when the dilated kernel is wider than the padded input (no output at all).
    """
    for name, value, least in (("n", n, 1), ("k", k, 1), ("stride", stride, 1), ("padding", padding, 0),
                               ("dilation", dilation, 1)):
        _whole(name, value, least)
    span = dilation * (k - 1) + 1
    if span > n + 2 * padding:
        raise ValueError(f"the kernel spans {span} pixels (k={k}, dilation={dilation}) but the padded input is only "
                         f"{n + 2 * padding} wide (n={n}, padding={padding}): there is no output")
    return (n + 2 * padding - span) // stride + 1


def dilate_kernel(weight, dilation):
    """The ``[C_out, C_in, k_h, k_w]`` kernel ``weight`` spread out with ``dilation - 1`` zeros between
    neighbouring taps: shape ``[C_out, C_in, k_h + (k_h - 1)(d - 1), k_w + (k_w - 1)(d - 1)]``, same dtype
    and device. An ordinary convolution with it equals ``F.conv2d(x, weight, dilation=dilation)``.

    Raises TypeError if ``weight`` is not a tensor, ValueError unless it is 4-D and ``dilation`` is a whole
    number >= 1.
    """
    import torch

    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be [C_out, C_in, k_h, k_w] (4-D), got shape {tuple(weight.shape)}")
    _whole("dilation", dilation, 1)
    c_out, c_in, kh, kw = weight.shape
    spread = weight.new_zeros(c_out, c_in, kh + (kh - 1) * (dilation - 1), kw + (kw - 1) * (dilation - 1))
    spread[:, :, ::dilation, ::dilation] = weight
    return spread


def receptive_field(layers):
    """Receptive field, in input pixels along one axis, of a stack of convolutions.

    ``layers`` lists ``(kernel size, dilation, stride)`` from the input up. Each layer widens the field by
    ``dilation * (k - 1)`` times the product of the strides of the layers *below* it (its own stride only
    spaces the outputs of the layers above): ``r = 1 + sum_l d_l (k_l - 1) prod_{i<l} s_i``. No layers: 1.
    Raises a ValueError unless every layer is three whole numbers >= 1.
    """
    field, jump = 1, 1
    for layer in layers:
        if not isinstance(layer, (tuple, list)) or len(layer) != 3:
            raise ValueError(f"each layer is (kernel size, dilation, stride), got {layer!r}")
        for name, value in zip(("kernel size", "dilation", "stride"), layer):
            _whole(name, value, 1)
        k, d, s = layer
        field += d * (k - 1) * jump
        jump *= s
    return field
