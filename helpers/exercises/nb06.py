"""Notebook 06 (quantization): the scale and zero point of affine quantization, per-channel fake
quantization, the fixed-point multiplier and an integer-only Linear layer; three sizes and errors worked
out by hand; and the challenge: a real int8 model within 0.3 point of the fp32 one."""
import torch
from torch import nn

from ..compress import quantization as q
from . import Case, difference, exercise
from .challenges import define


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pair(first, second):
    """Compare a returned pair item by item, naming each item (``scale``, ``zero point``) when it differs."""
    def compare(got, want, **tolerances):
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return f"returned {type(got).__name__}, expected the pair ({first}, {second})"
        for name, g, w in ((first, got[0], want[0]), (second, got[1], want[1])):
            problem = difference(g, w, **tolerances)
            if problem:
                return f"{name}: {problem}"
        return None
    return compare


# ---------------------------------------------------------------- 06.1: scale and zero point

@exercise("06.1", "scale and zero point of affine quantization", reference=q.affine_params,
          compare=lambda got, want: _pair("scale", "zero point")(got, want, abs_tol=1e-12),
          hint="Widen the range to contain 0 first; scale = (x_max - x_min) / (2^bits - 1), at least "
               "torch.finfo(torch.float32).eps; zero point = round(-x_min / scale), returned as an int.")
def _affine_cases():
    return [Case("the range [-1, 2] at 8 bits", (-1.0, 2.0)),
            Case("[-2, 6]: -x_min / scale = 63.75 must be rounded, not cut", (-2.0, 6.0)),
            Case("only positive values, [0.5, 3]: widen the range to [0, 3] (zero point 0)", (0.5, 3.0)),
            Case("only negative values, [-3, -0.5]: widen the range to [-3, 0]", (-3.0, -0.5)),
            Case("4 bits (integers 0..15) on [-1, 2]", (-1.0, 2.0), {"bits": 4}),
            Case("an all-zero tensor, x_min = x_max = 0: the scale must not be 0", (0.0, 0.0)),
            Case("a reversed range, x_min = 1 > x_max = -1", (1.0, -1.0), raises=ValueError)]


# ---------------------------------------------------------------- 06.2: symmetric fake quantization

@exercise("06.2", "symmetric fake quantization, per output channel or per tensor", reference=q.fake_quantize,
          hint="q_max = 2^(bits-1) - 1; per channel, max|w| over every dimension but the first (amax with "
               "keepdim=True), else over the whole tensor; scale = max|w| / q_max (kept above 0); "
               "round(w / scale), clamp to -q_max..q_max, times the scale.")
def _fake_quantize_cases():
    conv = torch.randn(8, 4, 3, 3, generator=_gen(0))
    linear = torch.randn(6, 10, generator=_gen(1))
    linear[2] *= 10  # one channel of large weights
    pruned = torch.randn(5, 3, 2, 2, generator=_gen(2))
    pruned[1] = 0.0
    return [Case("a conv weight [8, 4, 3, 3], 8 bits, per channel", (conv, 8)),
            Case("the same weight with one scale for the whole tensor (per_channel=False)", (conv, 8, False)),
            Case("a Linear weight [6, 10] at 4 bits, per channel, one channel 10 times larger", (linear, 4)),
            Case("2 bits: the levels -s, 0 and s only", (linear, 2)),
            Case("a pruned channel of zeros must stay zeros (not 0 / 0)", (pruned, 4)),
            Case("bits = 1: a symmetric grid with no level but 0", (conv, 1), raises=ValueError)]


# ---------------------------------------------------------------- 06.3: the fixed-point multiplier

@exercise("06.3", "a multiplier as an int32 mantissa and a shift", reference=q.fixed_point, compare=_pair("M0", "n"),
          hint="torch.frexp(M) gives M = m * 2^e with m in [0.5, 1); M0 = round(m * 2^31) and n = -e, both int64; "
               "where M0 reached 2^31, take 2^30 and n - 1. Raise ValueError unless 0 < M < 1.")
def _fixed_point_cases():
    spread = 10 ** (-4 * torch.rand(8, dtype=torch.float64, generator=_gen(3))) * 0.5  # from 5e-5 to 0.5
    return [Case("8 multipliers from 5e-5 to 0.5", (spread,)),
            Case("powers of two, 0.5, 0.25 and 2^-10: M0 = 2^30", (torch.tensor([0.5, 0.25, 2.0 ** -10],
                                                                              dtype=torch.float64),)),
            Case("float32 multipliers", (torch.tensor([0.3, 0.01, 0.7]),)),
            Case("a mantissa that rounds up to 2^31 (M = 1 - 2^-40): the carry", (torch.tensor(
                [1 - 2.0 ** -40, 0.5 - 2.0 ** -42, 0.3], dtype=torch.float64),)),
            Case("one multiplier, a 0-d tensor", (torch.tensor(0.1, dtype=torch.float64),)),
            Case("M = 1.0 is outside the scheme (0 < M < 1)", (torch.tensor([0.5, 1.0], dtype=torch.float64),),
                 raises=ValueError),
            Case("M = 0 has no mantissa in [0.5, 1)", (torch.tensor([0.0, 0.2], dtype=torch.float64),),
                 raises=ValueError)]


# ---------------------------------------------------------------- 06.4: an integer-only Linear layer

def _layer(seed, *, rows=4, features=16, channels=5, z_x=7, z_y=70, relu=False, size=2e-3, per_tensor=False):
    """The arguments of int8_linear for a made-up layer: uint8 inputs, int8 weights, an int32 bias, and
    multipliers whose outputs spread over the uint8 range (``size`` sets how far)."""
    g = _gen(seed)
    q_x = torch.randint(0, 256, (rows, features), generator=g)
    q_w = torch.randint(-128, 128, (channels, features), generator=g)
    q_b = torch.randint(-3000, 3000, (channels,), generator=g)
    M = size * (0.5 + torch.rand(1 if per_tensor else channels, dtype=torch.float64, generator=g))
    M0, n = q.fixed_point(M[0] if per_tensor else M)
    return (q_x, z_x, q_w, q_b, M0, n, z_y, relu)


def _outputs_and_accumulator(got, want):
    """The accumulator first: a wrong q_y usually follows from a wrong acc."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"returned {type(got).__name__}, expected the pair (q_y, acc)"
    return _pair("the accumulator acc", "the outputs q_y")((got[1], got[0]), (want[1], want[0]))


@exercise("06.4", "a quantized Linear layer in integers only", reference=q.int8_linear,
          compare=_outputs_and_accumulator,
          hint="acc = (q_x - z_x) @ q_w.T + q_b; s = 31 + n; q_y = z_y + ((acc * M0 + (1 << (s - 1))) >> s), "
               "clamped to 0..255, or z_y..255 with relu.")
def _int8_linear_cases():
    bad = list(_layer(9))
    bad[2] = torch.randint(-128, 128, (5, 17), generator=_gen(10))
    return [Case("4 inputs, 16 features, 5 output channels, z_x = 7, z_y = 70", _layer(4)),
            Case("a fused ReLU: outputs stop at z_y (the integer for 0.0), not at 0", _layer(5, relu=True)),
            Case("zero points 0 in and out", _layer(6, z_x=0, z_y=0)),
            Case("a large multiplier: outputs saturate at 0 and 255", _layer(7, size=2e-2)),
            Case("one M0 and n for the whole layer (0-d tensors)", _layer(8, per_tensor=True)),
            Case("q_w has 17 features, q_x has 16", tuple(bad), raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _fc1():
    from ..models import small_vgg

    return next(m for m in small_vgg() if isinstance(m, nn.Linear))


exercise("06.5", "bytes of fc1's weights in int8 with one fp32 scale per output channel",
         expected=lambda: _fc1().weight.numel() * 1 + _fc1().out_features * 4,
         hint="One byte per weight, four bytes per scale, one scale per output channel (row).")
exercise("06.6", "bytes of fc1's weights with 4-bit k-means weight sharing",
         expected=lambda: 2 ** 4 * 4 + _fc1().weight.numel() * 4 // 8,
         hint="A codebook of 16 fp32 values, and half a byte of index per weight.")
exercise("06.7", "the largest rounding error of symmetric 8-bit quantization when max|x| = 0.635",
         expected=lambda: 0.635 / (2 ** 7 - 1) / 2, rel_tol=1e-6,
         hint="The step is max|x| / 127; a value inside the range is at most half a step from a level.")


# ---------------------------------------------------------------- the challenge

FLOAT_LAYERS = (nn.Conv2d, nn.Linear)  # torch.ao's int8 modules are not subclasses of these (its QAT modules are)


def _int8_layers():
    import torch.ao.nn.quantized as nnq

    return (nnq.Conv2d, nnq.Linear)  # the fused ConvReLU2d / LinearReLU and the dynamic Linear are subclasses


def _measure(model):
    from ..data import load_dataset
    from ..measure import model_size
    from ..train import evaluate, trained_small_vgg

    fp32 = trained_small_vgg()
    test = load_dataset("fashion-mnist", train=False)
    int8_layers = sum(isinstance(m, _int8_layers()) for m in model.modules())
    float_layers = sum(isinstance(m, FLOAT_LAYERS) for m in model.modules())
    accuracy, fp32_accuracy = evaluate(model, test), evaluate(fp32, test)
    return {"accuracy": accuracy, "fp32 accuracy": fp32_accuracy,
            "points lost vs fp32": 100 * (fp32_accuracy - accuracy),
            "share of conv/linear layers in int8": int8_layers / max(int8_layers + float_layers, 1),
            "size_MB": model_size(model) / 1e6, "file size / fp32's": model_size(model) / model_size(fp32)}


define("06", "an int8 model of the course's VGG within 0.3 point of its fp32 accuracy on the test set",
       _measure, targets={"points lost vs fp32": ("<=", 0.3), "share of conv/linear layers in int8": (">=", 1.0),
                          "file size / fp32's": ("<=", 0.3)},
       score="accuracy")
