"""Quantization (notebook 06): an int8 copy of a model for CPU inference, through PyTorch's eager flow, and
the arithmetic of quantization that notebook 06 builds from scratch (the references of its exercises).

* :func:`quantize`: post-training static quantization of an ``nn.Sequential`` model (``torch.ao``'s eager flow).
* :func:`affine_params`: scale and zero point of affine quantization from a range (as PyTorch's ``MinMaxObserver``).
* :func:`fake_quantize`: weights rounded to a symmetric grid and back, per output channel or per tensor.
* :func:`fixed_point`: a multiplier ``0 < M < 1`` as an int32 mantissa and a shift (Jacob et al., CVPR 2018).
* :func:`int8_linear`: a quantized Linear layer in integer arithmetic only.
"""
import contextlib
import copy
import math
import warnings

import torch
from torch import nn


QUANTIZABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten,
               nn.Dropout, nn.Identity)
ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")  # PyTorch's quantized CPU engines, best first on x86


def _supported_engines():
    return torch.backends.quantized.supported_engines


def quantized_engine():
    """The quantized CPU engine :func:`quantize` uses here: the first of ``ENGINES`` this PyTorch supports."""
    supported = _supported_engines()
    for engine in ENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(f"this PyTorch build has no quantized CPU engine (supported: {supported}), so it cannot "
                       "run int8 models; install an official PyTorch wheel for x86-64 or ARM64")


def _fusable_groups(model):
    """Names of the [Conv2d, BatchNorm2d, ReLU], [Conv2d, BatchNorm2d], [Conv2d, ReLU] and [Linear, ReLU] runs."""
    groups, i = [], 0
    while i < len(model):
        run = [i]
        if isinstance(model[i], nn.Conv2d):
            if i + 1 < len(model) and isinstance(model[i + 1], nn.BatchNorm2d):
                run.append(i + 1)
            if run[-1] + 1 < len(model) and isinstance(model[run[-1] + 1], nn.ReLU):
                run.append(run[-1] + 1)
        elif isinstance(model[i], nn.Linear) and i + 1 < len(model) and isinstance(model[i + 1], nn.ReLU):
            run.append(i + 1)
        if len(run) > 1:
            groups.append([str(j) for j in run])
        i = run[-1] + 1
    return groups


def _spliced(model):
    """One ``nn.Sequential`` chain: the layers of nested ``nn.Sequential`` containers put in their place."""
    layers = []
    for layer in model:
        layers += list(_spliced(layer)) if isinstance(layer, nn.Sequential) else [layer]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def ao_warnings_off():
    """Silence the deprecation warnings of ``torch.ao.quantization`` and of its quantized tensor types.

    They say that the eager flow and the ``quint8``/``qint8`` tensors will go in favour of torchao; in
    PyTorch 2.14 they still run, and notebook 06 explains why the course still uses them. Only these
    three warnings are silenced, only inside the ``with`` block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
        yield


def quantize(model, calibration_data, *, batches=8, batch_size=64):
    """An int8 copy of ``model`` for CPU inference: post-training static quantization.

    This is PyTorch's eager flow (``torch.ao.quantization``), the one that runs real int8 kernels on
    the CPU without a compiler: Conv-BN-ReLU runs are fused, observers record the activations' ranges
    on ``batches`` batches of ``calibration_data`` (a Dataset of (image, label) pairs), weights are
    quantized per output channel (symmetric int8) and activations per tensor (affine uint8).
    ``torch.ao.quantization`` (and the quantized tensor type it builds on) is deprecated in favour of
    torchao; notebook 06 explains this, and the deprecation warnings are silenced here
    (:func:`ao_warnings_off`).

    ``model`` must be an ``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and
    Linear layers, such as ``helpers.small_vgg()`` or a model pruned with :func:`prune_channels`;
    nested ``nn.Sequential`` containers (the two thin layers :func:`low_rank` makes) are spliced into one chain.
    The quantized engine (see :func:`quantized_engine`) is selected globally, as PyTorch requires.
    """
    import torch.ao.quantization as tq
    from torch.utils.data import DataLoader, Dataset

    if not isinstance(model, nn.Sequential):
        raise TypeError("quantize handles nn.Sequential models such as helpers.small_vgg(); "
                        f"got {type(model).__name__}. Other models need torchao's pt2e flow (notebook 06).")
    model = _spliced(model)
    for i, layer in enumerate(model):
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"layer {i} ({type(layer).__name__}) has no int8 version in this flow; quantize handles "
                            "Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and Linear layers")
    if not isinstance(calibration_data, Dataset) or len(calibration_data) == 0:
        raise TypeError("calibration_data must be a non-empty Dataset of (image, label) pairs, "
                        "such as load_dataset('fashion-mnist')")
    engine = quantized_engine()
    torch.backends.quantized.engine = engine
    with ao_warnings_off():
        fused = tq.fuse_modules(copy.deepcopy(model).cpu().eval(), _fusable_groups(model))
        wrapped = nn.Sequential(tq.QuantStub(), fused, tq.DeQuantStub()).eval()
        wrapped.qconfig = tq.get_default_qconfig(engine)
        prepared = tq.prepare(wrapped)
        with torch.inference_mode():
            for b, (images, _) in enumerate(DataLoader(calibration_data, batch_size=batch_size)):
                if b == batches:
                    break
                prepared(images)
        return tq.convert(prepared)


# ---------------------------------------------------------------- the arithmetic, from notebook 06

def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be a whole number from 2 to 16, got {bits!r}")


def affine_params(x_min, x_max, bits=8):
    """Scale and zero point of affine (asymmetric) quantization of ``[x_min, x_max]`` onto ``0 .. 2^bits - 1``.

    The range is first widened to contain 0, so that 0.0 has an integer of its own (the zero point);
    then ``scale = (x_max - x_min) / (2^bits - 1)`` and ``zero_point = round(-x_min / scale)`` (rounding
    half to even, like ``torch.round``). A range of width 0 (``x_min = x_max = 0``) gets the scale
    ``torch.finfo(torch.float32).eps`` instead of 0, so that nothing divides by zero, as PyTorch's
    observers do; ``torch.ao.quantization.MinMaxObserver(quant_min=0, quant_max=2**bits - 1)`` gives the
    same values (in float32). Returns ``(scale, zero_point)`` as a float and an int.

    Raises ValueError when ``x_min > x_max``, when a bound is not a finite number, or when ``bits`` is
    not a whole number from 2 to 16.
    """
    _check_bits(bits)
    x_min, x_max = float(x_min), float(x_max)
    if not (math.isfinite(x_min) and math.isfinite(x_max)):
        raise ValueError(f"the range must have finite bounds, got [{x_min}, {x_max}]")
    if x_min > x_max:
        raise ValueError(f"x_min must not exceed x_max, got [{x_min}, {x_max}]")
    q_min, q_max = 0, 2 ** bits - 1
    x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
    scale = max((x_max - x_min) / (q_max - q_min), torch.finfo(torch.float32).eps)
    zero_point = min(q_max, max(q_min, q_min - round(x_min / scale)))
    return scale, int(zero_point)


def fake_quantize(w, bits, per_channel=True):
    """``w`` rounded to a symmetric ``bits``-bit grid and back to floats ("fake" quantization of weights).

    The grid is ``scale * q`` for the integers ``q`` in ``-(2^(bits-1) - 1) .. 2^(bits-1) - 1`` (-127..127
    for 8 bits), with ``scale = max|w| / (2^(bits-1) - 1)``: one scale per output channel (``w[c]``, the
    first dimension) when ``per_channel``, else one for the whole tensor. Values are rounded half to
    even (``torch.round``). A channel of zeros stays zeros (its scale is kept above 0). Equal to
    ``torch.fake_quantize_per_channel_affine`` / ``torch.fake_quantize_per_tensor_affine`` with these
    scales, zero point 0 and that integer range.

    Raises TypeError when ``w`` is not a floating-point tensor, ValueError when ``bits`` is not a whole
    number from 2 to 16 (1 bit leaves no level but 0 on a symmetric grid), or when ``per_channel`` is
    asked of a tensor with fewer than 2 dimensions (a weight is ``[C_out, ...]``).
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {type(w).__name__}"
                        f"{' of ' + str(w.dtype) if isinstance(w, torch.Tensor) else ''}")
    _check_bits(bits)
    q_max = 2 ** (bits - 1) - 1
    if per_channel:
        if w.dim() < 2:
            raise ValueError(f"per-channel quantization needs a weight [C_out, ...] of 2 or more dimensions, "
                             f"got shape {tuple(w.shape)}")
        max_abs = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True)
    else:
        max_abs = w.abs().max()
    scale = max_abs.clamp(min=1e-12) / q_max
    return torch.clamp(torch.round(w / scale), -q_max, q_max) * scale


def fixed_point(M):
    """Each multiplier ``0 < M < 1`` written as ``M0 * 2^-(31 + n)``: ``M0`` an int32 in ``[2^30, 2^31)``.

    ``M = m * 2^-n`` with the mantissa ``m`` in ``[0.5, 1)`` (``torch.frexp``), and ``M0 = round(m * 2^31)``:
    at least 30 significant bits (Jacob et al., CVPR 2018, section 2.2). When the rounding carries
    ``M0`` up to ``2^31``, which an int32 cannot hold, ``M0`` becomes ``2^30`` and ``n`` one less.
    Returns ``(M0, n)``, two int64 tensors of ``M``'s shape.

    Raises TypeError when ``M`` is not a floating-point tensor, ValueError when a value is not in (0, 1).
    """
    if not isinstance(M, torch.Tensor) or not M.is_floating_point():
        raise TypeError(f"M must be a floating-point tensor, got {type(M).__name__}")
    if not ((M > 0) & (M < 1)).all():
        raise ValueError(f"the fixed-point scheme needs 0 < M < 1; got values from {M.min().item():.4g} "
                         f"to {M.max().item():.4g}")
    mantissa, exponent = torch.frexp(M)  # M = mantissa * 2^exponent, mantissa in [0.5, 1)
    M0, n = torch.round(mantissa.double() * 2 ** 31).long(), -exponent.long()
    carry = M0 == 2 ** 31  # the mantissa rounded up to 1.0: take 0.5 and one shift less
    return torch.where(carry, 2 ** 30, M0), torch.where(carry, n - 1, n)


def int8_linear(q_x, z_x, q_w, q_b, M0, n, z_y, relu=False):
    """A quantized Linear layer computed with integers only; returns ``(q_y, acc)``.

    ``q_x`` ``[N, K]``: the input's uint8 integers (zero point ``z_x``); ``q_w`` ``[C_out, K]``: the int8
    weights (symmetric: no zero point); ``q_b`` ``[C_out]``: the bias as int32 at scale ``s_w * s_x``;
    ``M0``, ``n`` ``[C_out]`` (or one of each): the multiplier ``s_w * s_x / s_y`` from :func:`fixed_point`;
    ``z_y``: the output's zero point. All integer tensors (int64 here, so that nothing overflows).

    ``acc = (q_x - z_x) @ q_w.T + q_b`` is the int32 accumulator; ``q_y = z_y + (acc * M0 + 2^(s-1)) >> s``
    with ``s = 31 + n`` (a rounding right shift, halves rounded up), clamped to ``0 .. 255``, or to
    ``z_y .. 255`` with a fused ReLU (``z_y`` stands for 0.0). Both results are int64 tensors ``[N, C_out]``.

    Raises TypeError when ``q_x`` or ``q_w`` is not an integer tensor, ValueError when ``q_w`` does not
    have ``q_x``'s number of features ``K`` (``q_w.shape[1] != q_x.shape[-1]``).
    """
    for name, t in (("q_x", q_x), ("q_w", q_w)):
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (int_repr() of a quantized tensor, as int64), "
                            f"got {type(t).__name__}{' of ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}")
    if q_w.dim() != 2 or q_x.shape[-1] != q_w.shape[1]:
        raise ValueError(f"q_w must be [C_out, K] with K = {q_x.shape[-1]} features like q_x, "
                         f"got q_x {tuple(q_x.shape)} and q_w {tuple(q_w.shape)}")
    acc = (q_x.long() - z_x) @ q_w.long().T + q_b
    shift = 31 + n
    q_y = (acc * M0 + (1 << (shift - 1))) >> shift  # multiply by M0 / 2^shift, rounding halves up
    return (q_y + z_y).clamp(z_y if relu else 0, 255), acc
