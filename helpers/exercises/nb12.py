"""Notebook 12 (quantizing a language model): group-wise round to nearest, packing two 4-bit codes per byte,
one column of GPTQ and SmoothQuant's factors; two sizes worked out by hand; and the challenge: the fewest bits
per weight that keep the GPT within 2% of its fp32 bits per byte."""
import torch

from ..compress import llm
from . import Case, exercise
from .challenges import define


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- 12.1: group-wise round to nearest

def _exact_groups(rows, groups, size, seed, bits=4, positive=False, steps=(1.0, 2.0, 0.5)):
    """Whole multiples of a power of two: each group spans exactly 2**bits - 1 of its steps (from -2**(bits-1)
    to 2**(bits-1) - 1 steps, or from 0 with ``positive``), so that its scale is that step exactly, in fp32
    and in fp16 alike; neighbouring groups have other steps."""
    g = _gen(seed)
    lo = 0 if positive else -2 ** (bits - 1)
    hi = lo + 2 ** bits - 1
    w = torch.randint(lo + positive, hi + 1, (rows, groups, size), generator=g).float()
    w[..., 0], w[..., 1] = lo + positive, hi  # positive: the smallest weight is one step, the range [0, hi] once widened
    step = torch.tensor(steps * groups)[:groups]
    return (w * step[None, :, None]).reshape(rows, groups * size)


@exercise("12.1", "round to nearest by groups (asymmetric, fp16 scale, integer zero point)",
          reference=llm.fake_quantize_groups,
          hint="Reshape to [rows, groups, group_size]; per group lo = min(min, 0), hi = max(max, 0); "
               "scale = ((hi - lo) / (2**bits - 1)).clamp(min=torch.finfo(torch.float32).eps).half().float(); "
               "zero = round(-lo / scale); q = clamp(round(w * (1 / scale)) + zero, 0, 2**bits - 1); (q - zero) * scale.")
def _groups_cases():
    zeros = _exact_groups(2, 2, 8, 3)
    zeros[1, 8:] = 0.0
    return [Case("a [3, 24] weight, 4 bits, groups of 8, each group on its own grid", (_exact_groups(3, 3, 8, 0), 4, 8)),
            Case("group_size=None: one group per row (per output channel)", (_exact_groups(3, 3, 8, 0), 4, None)),
            Case("3 bits, groups of 4", (_exact_groups(2, 4, 4, 1, bits=3), 3, 4)),
            Case("only positive weights: widen each range to contain 0",
                 (_exact_groups(3, 2, 4, 2, positive=True), 4, 4)),
            Case("a group of zeros comes back as zeros (the scale at least float32's eps)", (zeros, 4, 8)),
            Case("random weights: round the scale to fp16 first, as the file stores it",
                 (torch.randn(4, 32, generator=_gen(4)), 4, 16)),
            Case("group_size 5 does not divide a row of 24", (_exact_groups(3, 3, 8, 0), 4, 5), raises=ValueError),
            Case("bits = 1 is outside 2..8", (_exact_groups(3, 3, 8, 0), 1, 8), raises=ValueError),
            Case("bits = 9 is outside 2..8", (_exact_groups(3, 3, 8, 0), 9, 8), raises=ValueError)]


# ---------------------------------------------------------------- 12.2: two 4-bit codes per byte

@exercise("12.2", "two 4-bit codes per byte", reference=llm.pack_int4,
          hint="q = q.to(torch.uint8); q[..., 0::2] | (q[..., 1::2] << 4): the even positions in the low four bits. "
               "Raise ValueError for an odd last dimension or a code outside 0..15.")
def _pack_cases():
    return [Case("8 codes in a row", (torch.tensor([1, 2, 3, 4, 5, 6, 7, 8], dtype=torch.uint8),)),
            Case("a [3, 10] matrix: pairs along the last dimension",
                 (torch.randint(0, 16, (3, 10), generator=_gen(5), dtype=torch.uint8),)),
            Case("the extremes 0 and 15", (torch.tensor([0, 15, 15, 0], dtype=torch.uint8),)),
            Case("codes given as int64 come back packed in uint8", (torch.tensor([[9, 3], [12, 10]]),)),
            Case("an odd number of codes cannot be paired", (torch.tensor([1, 2, 3], dtype=torch.uint8),),
                 raises=ValueError),
            Case("16 does not fit in 4 bits", (torch.tensor([16, 2], dtype=torch.int64),), raises=ValueError)]


# ---------------------------------------------------------------- 12.3: one column of GPTQ

def round_to_quarter(column):
    """The grid of the check's cases: multiples of 0.25."""
    return torch.round(column * 4) / 4


def _gptq_case(seed, rows=4, cols=6):
    g = _gen(seed)
    x = torch.randn(200, cols, generator=g, dtype=torch.float64) @ torch.randn(cols, cols, generator=g, dtype=torch.float64)
    W = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    return W, llm.inverse_hessian_factor(x.T @ x)


@exercise("12.3", "one column of GPTQ: quantize it, spread its error over the later columns",
          reference=llm.gptq_step,
          hint="Work on W.clone(); r = quantize(W[:, i]); e = (W[:, i] - r) / U[i, i]; W[:, i] = r; "
               "W[:, i+1:] -= e[:, None] * U[i, i+1:][None, :]. Compute e before you overwrite column i.")
def _gptq_cases():
    W, U = _gptq_case(6)
    W2, U2 = _gptq_case(7, rows=3, cols=5)
    return [Case("column 0 of a [4, 6] weight", (W, U, 0, round_to_quarter)),
            Case("a middle column, i = 2: the columns before it stay as they are", (W, U, 2, round_to_quarter)),
            Case("the last column: nothing after it to update", (W, U, 5, round_to_quarter)),
            Case("another layer, [3, 5], column 1", (W2, U2, 1, round_to_quarter)),
            Case("i = 6 is not a column of a [4, 6] weight", (W, U, 6, round_to_quarter), raises=IndexError)]


# ---------------------------------------------------------------- 12.4: SmoothQuant's factors

@exercise("12.4", "SmoothQuant's factors s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)", reference=llm.smooth_scales,
          hint="(act_max ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5); "
               "raise ValueError unless 0 <= alpha <= 1.")
def _smooth_cases():
    g = _gen(8)
    act, weight = torch.rand(6, generator=g) * 20, torch.rand(6, generator=g)
    dead_act, dead_weight = act.clone(), weight.clone()
    dead_act[2], dead_weight[4] = 0.0, 0.0
    return [Case("6 channels, alpha = 0.5 (the paper's default)", (act, weight, 0.5)),
            Case("alpha = 0.8: more of the range moves into the weights", (act, weight, 0.8)),
            Case("alpha = 0: s = 1 / max|W_j|", (act, weight, 0.0)),
            Case("alpha = 1: s = max|X_j|", (act, weight, 1.0)),
            Case("a channel whose inputs are all 0: s at least 1e-5", (dead_act, weight, 0.5)),
            Case("a weight column of zeros: max|W_j| at least 1e-5 before the power", (act, dead_weight, 0.5)),
            Case("alpha = 1.5 is outside [0, 1]", (act, weight, 1.5), raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _config():
    from ..lm import GPTConfig

    return GPTConfig()


def _packed_fc1_bytes():
    c = _config()
    rows, cols, group = 4 * c.width, c.width, 64
    groups = rows * cols // group
    return rows * cols * 4 // 8 + groups * 2 + groups * 4 // 8


exercise("12.5", "bytes of one packed fc1 weight at int4, groups of 64 (fp16 scales, 4-bit zero points)",
         expected=_packed_fc1_bytes,
         hint="Half a byte per weight, then per group of 64 weights one 2-byte scale and half a byte of zero point.")
exercise("12.6", "bytes of the GPT's key-value cache, batch 8, every text at its whole context, in fp16",
         expected=lambda: 8 * 2 * _config().layers * _config().width * 2 * _config().context,
         hint="Per byte of text and per text, every layer keeps a key and a value of `width` numbers, 2 bytes each.")


# ---------------------------------------------------------------- the challenge

def _measure(model):
    from .. import lm

    fp32 = lm.trained_gpt()
    windows = lm.held_out_windows()
    packed = [m for m in model.modules() if isinstance(m, llm.PackedLinear)]
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    weights = sum(m.in_features * m.out_features for m in packed)
    stored = sum(sum(t.numel() * t.element_size() for name, t in m.named_buffers() if name != "bits") for m in packed)
    ours, reference = lm.bits_per_byte(model, windows), lm.bits_per_byte(fp32, windows)
    return {"bits per byte": ours, "fp32 bits per byte": reference,
            "% above fp32": 100 * (ours / reference - 1),
            "share of Linear layers packed": len(packed) / max(len(packed) + linears, 1),
            "bits per weight": 8 * stored / max(weights, 1)}


define("12", "the fewest bits per weight that keep the GPT within 2% of its fp32 bits per byte on held-out text",
       _measure, targets={"% above fp32": ("<=", 2.0), "share of Linear layers packed": (">=", 1.0)},
       score="bits per weight", higher_is_better=False)
