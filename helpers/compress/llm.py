"""Quantizing a language model's weights (notebook 12): round to nearest by groups, packing, GPTQ, AWQ-style
scaling and SmoothQuant. These are the tested references of what notebook 12 builds from scratch.

A weight is a Linear layer's matrix ``[out_features, in_features]``. A *group* is ``group_size`` neighbouring
weights of one row, the weights that multiply ``group_size`` neighbouring input channels; ``group_size=None``
means one group per row (per output channel). Each group gets an asymmetric grid: a scale, stored in fp16,
and a zero point, an integer ``0 .. 2**bits - 1`` stored in ``bits`` bits, so ``bits + (16 + bits) / group_size``
bits per weight in all (:func:`bits_per_weight`).

* :func:`quantize_groups`, :func:`dequantize_groups`, :func:`fake_quantize_groups`: round to nearest (RTN).
* :func:`pack_int4` / :func:`unpack_int4` (two codes per byte), :func:`pack_bits` / :func:`unpack_bits` (any
  width from 2 to 8 bits); :class:`PackedLinear`, :func:`pack_model`: a model whose weights are stored packed;
  :func:`save_packed` / :func:`load_packed`: its file (everything else in fp16) and back.
* :func:`layer_statistics`: what calibration text shows each Linear layer: the Hessian of its layer-wise
  objective, ``H = sum_t x_t x_t^T``, and each input channel's largest and mean magnitude.
* :func:`gptq` (Frantar et al., ICLR 2023) and one column of it, :func:`gptq_step`; :func:`awq_scales`
  (activation-aware scaling, Lin et al., MLSys 2024); :func:`smooth_scales` (SmoothQuant, Xiao et al., ICML 2023).
* :func:`quantize_model`: RTN, GPTQ or AWQ on every Linear layer of a model; :func:`w8a8_model`: int8 weights
  and int8 activations simulated, with or without SmoothQuant.
* :func:`tensor_bytes`: the bytes a model's tensors take in memory (tensor subclasses such as torchao's included).
"""
import copy
import io
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SCALE_FLOOR = torch.finfo(torch.float32).eps  # the least scale, so that an all-zero group divides nothing by 0


# ---------------------------------------------------------------- checks

def _check_bits(bits):
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"bits must be a whole number from 2 to 8, got {bits!r}")


def _check_weight(w, what="the weight"):
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or not w.is_floating_point():
        raise TypeError(f"{what} must be a 2-D float tensor [out_features, in_features], "
                        f"got {type(w).__name__ if not isinstance(w, torch.Tensor) else tuple(w.shape)}")


def group_length(in_features, group_size):
    """The number of weights per group: ``in_features`` for ``group_size=None`` (one group per row), else
    ``group_size``, which must divide ``in_features``."""
    if group_size is None:
        return in_features
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be None (per output channel) or a whole number >= 1, got {group_size!r}")
    if in_features % group_size:
        raise ValueError(f"group_size {group_size} does not divide a row of {in_features} weights: "
                         f"choose a divisor of {in_features}, or None for one group per row")
    return group_size


# ---------------------------------------------------------------- round to nearest

def quantize_groups(w, bits, group_size=None):
    """Round-to-nearest quantization of ``w`` by groups: ``(q, scale, zero)``.

    Each group's range ``[min, max]`` is widened to contain 0; its scale is ``(max - min) / (2**bits - 1)``
    (at least :data:`SCALE_FLOOR`) rounded to fp16, as the file stores it; its zero point ``round(-min / scale)``;
    ``q = clamp(round(w * (1 / scale)) + zero, 0, 2**bits - 1)``: multiplied by the reciprocal, as PyTorch's
    ``fake_quantize_per_channel_affine`` and torchao's ``quantize_affine`` do, so that the rare exact ties
    (``w / scale = k + 1/2``) round as theirs do. Returns ``q`` (uint8, ``w``'s shape), ``scale`` (fp16) and
    ``zero`` (uint8), both ``[out_features, groups]``.
    """
    _check_weight(w)
    _check_bits(bits)
    rows, cols = w.shape
    g = group_length(cols, group_size)
    x = w.detach().float().reshape(rows, cols // g, g)
    top = 2 ** bits - 1
    lo, hi = x.amin(-1).clamp(max=0), x.amax(-1).clamp(min=0)
    scale = ((hi - lo) / top).clamp(min=SCALE_FLOOR).half()
    s = scale.float()
    zero = torch.round(-lo / s).clamp(0, top)
    q = torch.clamp(torch.round(x * (1.0 / s[..., None])) + zero[..., None], 0, top)
    return q.reshape(rows, cols).to(torch.uint8), scale, zero.to(torch.uint8)


def dequantize_groups(q, scale, zero):
    """The weights ``(q - zero) * scale``, group by group, as float32 ``[out_features, in_features]``."""
    if q.dim() != 2 or scale.shape != zero.shape or scale.shape[0] != q.shape[0] or q.shape[1] % scale.shape[1]:
        raise ValueError(f"codes {tuple(q.shape)}, scales {tuple(scale.shape)} and zero points {tuple(zero.shape)} "
                         "do not fit together: expected [rows, cols], [rows, groups] and [rows, groups]")
    rows, cols = q.shape
    groups = scale.shape[1]
    x = q.float().reshape(rows, groups, cols // groups) - zero.float()[..., None]
    return (x * scale.float()[..., None]).reshape(rows, cols)


def fake_quantize_groups(w, bits, group_size=None):
    """``w`` rounded to its ``bits``-bit group grids and back (:func:`quantize_groups`), in ``w``'s dtype."""
    return dequantize_groups(*quantize_groups(w, bits, group_size)).to(w.dtype)


def bits_per_weight(bits, group_size, scale_bits=16):
    """Storage per weight of the format: ``bits`` for the code, plus a ``scale_bits`` scale and a ``bits``-bit
    zero point shared by ``group_size`` weights."""
    _check_bits(bits)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a whole number >= 1 (the row length for per-channel), got {group_size!r}")
    return bits + (scale_bits + bits) / group_size


# ---------------------------------------------------------------- packing

def _check_codes(q, bits):
    if not isinstance(q, torch.Tensor) or q.is_floating_point() or q.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {getattr(q, 'dtype', type(q).__name__)}")
    if q.numel() and (q.min() < 0 or q.max() > 2 ** bits - 1):
        raise ValueError(f"{bits}-bit codes must lie in 0..{2 ** bits - 1}, got {int(q.min())}..{int(q.max())}")


def pack_int4(q):
    """Two 4-bit codes per byte: ``q[..., 2i]`` in the low four bits, ``q[..., 2i + 1]`` in the high four.

    ``q``: integers 0..15 with an even last dimension. Returns uint8, the last dimension halved.
    """
    _check_codes(q, 4)
    if q.dim() == 0 or q.shape[-1] % 2:
        raise ValueError(f"pack_int4 pairs neighbours along the last dimension, which must be even; got shape {tuple(q.shape)}")
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_int4(packed):
    """The codes :func:`pack_int4` packed, low four bits first: uint8, the last dimension doubled."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError("unpack_int4 expects the uint8 tensor pack_int4 returned")
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)


def pack_bits(q, bits):
    """Codes of ``bits`` bits (2 to 8) as a stream of bytes: each code's bits, least significant first, one
    code after the other, the last byte padded with zeros. For 4 bits this is :func:`pack_int4`'s order."""
    _check_bits(bits)
    _check_codes(q, bits)
    planes = (q.flatten().long()[:, None] >> torch.arange(bits, device=q.device)) & 1
    stream = planes.flatten()
    stream = torch.cat([stream, stream.new_zeros((-len(stream)) % 8)]).view(-1, 8)
    return (stream << torch.arange(8, device=q.device)).sum(1).to(torch.uint8)


def unpack_bits(packed, bits, count):
    """The first ``count`` codes of a stream :func:`pack_bits` wrote, as a flat uint8 tensor."""
    _check_bits(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError("unpack_bits expects the 1-D uint8 tensor pack_bits returned")
    if count * bits > 8 * len(packed):
        raise ValueError(f"{len(packed)} bytes hold fewer than {count} codes of {bits} bits")
    if bits in (2, 4, 8):  # whole codes per byte: shifts and masks, no bit stream needed
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        return ((packed[:, None] >> shifts) & (2 ** bits - 1)).flatten()[:count]
    stream = ((packed.long()[:, None] >> torch.arange(8, device=packed.device)) & 1).flatten()[:count * bits]
    return (stream.view(count, bits) << torch.arange(bits, device=packed.device)).sum(1).to(torch.uint8)


@dataclass
class QuantizedWeight:
    """A quantized Linear weight: codes ``q``, fp16 ``scale`` and ``zero`` points per group, and, for
    activation-aware scaling, the fp16 per-input-channel ``input_scale`` ``s`` (the layer computes
    ``dequantized(q) @ (x / s)``)."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    input_scale: torch.Tensor = None
    info: dict = field(default_factory=dict)

    def dequantize(self):
        """The weight the layer effectively computes with, float32 (divided by ``input_scale`` when there is one)."""
        w = dequantize_groups(self.q, self.scale, self.zero)
        return w if self.input_scale is None else w / self.input_scale.float()

    @property
    def group_size(self):
        return self.q.shape[1] // self.scale.shape[1]


class PackedLinear(nn.Module):
    """A bias-free Linear layer stored as packed codes (:func:`pack_bits`), fp16 scales, packed zero points and
    (activation-aware scaling) an fp16 ``input_scale``; ``bits`` is kept too, so a file says what it holds.

    Its weight is unpacked and dequantized at every call: this layer shows what the file and the memory hold,
    not a fast kernel (a real low-bit kernel reads the packed codes directly). ``PackedLinear(in, out, bits,
    group_size)`` is an empty one (for loading a file); :meth:`from_quantized` packs a :class:`QuantizedWeight`.
    """

    def __init__(self, in_features, out_features, bits, group_size=None, input_scale=False):
        super().__init__()
        _check_bits(bits)
        groups = in_features // group_length(in_features, group_size)
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        self.register_buffer("bits", torch.tensor(bits, dtype=torch.uint8))
        self.register_buffer("codes", torch.zeros(-(-out_features * in_features * bits // 8), dtype=torch.uint8))
        self.register_buffer("zeros", torch.zeros(-(-out_features * groups * bits // 8), dtype=torch.uint8))
        self.register_buffer("scales", torch.ones(out_features, groups, dtype=torch.float16))
        self.register_buffer("input_scale", torch.ones(in_features, dtype=torch.float16) if input_scale else None)

    @classmethod
    def from_quantized(cls, qw):
        if not isinstance(qw, QuantizedWeight):
            raise TypeError(f"PackedLinear.from_quantized expects a QuantizedWeight, got {type(qw).__name__}")
        out_features, in_features = qw.q.shape
        layer = cls(in_features, out_features, qw.bits, qw.group_size, qw.input_scale is not None)
        layer.codes, layer.zeros, layer.scales = pack_bits(qw.q, qw.bits), pack_bits(qw.zero, qw.bits), qw.scale.half()
        if qw.input_scale is not None:
            layer.input_scale = qw.input_scale.half()
        return layer

    def unpacked(self):
        """The codes, scales and zero points back as a :class:`QuantizedWeight`."""
        bits = int(self.bits)
        q = unpack_bits(self.codes, bits, self.out_features * self.in_features).view(self.out_features, -1)
        zero = unpack_bits(self.zeros, bits, self.out_features * self.groups).view(self.out_features, -1)
        return QuantizedWeight(q, self.scales, zero, bits, self.input_scale)

    def forward(self, x):
        return F.linear(x, self.unpacked().dequantize().to(x.dtype))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={int(self.bits)}, "
                f"group_size={self.in_features // self.groups}")


def _linears(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _set(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def pack_model(model, quantized):
    """A copy of ``model`` with each Linear named in ``quantized`` (name -> :class:`QuantizedWeight`) replaced by
    a :class:`PackedLinear`."""
    model = copy.deepcopy(model)
    linears = _linears(model)
    for name, qw in quantized.items():
        if name not in linears:
            raise KeyError(f"{name!r} is not a Linear layer of the model; it has {sorted(linears)}")
        _set(model, name, PackedLinear.from_quantized(qw))
    return model


def save_packed(model):
    """The file of a packed model, as bytes: its ``state_dict`` with every float32 tensor (embeddings,
    LayerNorms) stored in fp16, as deployed low-bit models keep them."""
    state = {k: v.half() if v.dtype == torch.float32 else v for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_packed(data, model):
    """A model from the bytes :func:`save_packed` wrote: ``model`` (an unquantized model of the same shape, left
    unchanged) with a :class:`PackedLinear` for every layer the file packs, loaded with ``weights_only=True``."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    model = copy.deepcopy(model)
    for name, linear in _linears(model).items():
        if f"{name}.codes" in state:
            groups = state[f"{name}.scales"].shape[1]
            _set(model, name, PackedLinear(linear.in_features, linear.out_features, int(state[f"{name}.bits"]),
                                           linear.in_features // groups, f"{name}.input_scale" in state))
    template = model.state_dict()
    model.load_state_dict({k: v.to(template[k].dtype) if k in template else v for k, v in state.items()})
    return model.eval()


# ---------------------------------------------------------------- calibration

@dataclass
class LayerStats:
    """What calibration text shows one Linear layer: ``hessian`` = sum over tokens of ``x x^T`` (float64,
    ``[in, in]``), ``tokens`` counted, and each input channel's ``absmax`` and ``absmean``."""

    hessian: torch.Tensor
    tokens: int
    absmax: torch.Tensor
    absmean: torch.Tensor


class _Stop(Exception):
    pass


def layer_statistics(model, windows, names=None, *, batch_size=16, stop_after=False):
    """:class:`LayerStats` of the Linear layers ``names`` (all of them by default) on calibration ``windows``
    (a long tensor ``[N, T + 1]`` of bytes; the model reads ``[:, :-1]``). With ``stop_after`` the forward
    pass stops once the last of them has run (GPTQ quantizes one layer at a time and needs no more)."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError("the calibration set is empty: pass windows [N >= 1, T + 1] of bytes, "
                         "e.g. random_windows(corpus().train, 64, 256, generator)")
    linears = _linears(model)
    names = list(linears) if names is None else list(names)
    unknown = [n for n in names if n not in linears]
    if unknown or not names:
        raise KeyError(f"not Linear layers of the model: {unknown or 'none given'}; it has {sorted(linears)}")
    sums = {n: [0.0, 0, 0.0, 0.0] for n in names}  # hessian, tokens, absmax, abssum
    last = names[-1] if stop_after else None

    def hook(name):
        def record(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            s = sums[name]
            s[0] = s[0] + (x.T @ x).double()  # products in float32 (fast), summed over batches in float64
            s[1] += x.shape[0]
            s[2] = torch.maximum(torch.as_tensor(s[2], dtype=torch.float32), x.abs().amax(0))
            s[3] = s[3] + x.abs().sum(0).double()
            if name == last:
                raise _Stop
        return record

    handles = [linears[n].register_forward_pre_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: the statistics are used later with ordinary tensors
            for batch in windows.long().split(batch_size):
                try:
                    model(batch[:, :-1])
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: LayerStats(s[0], s[1], s[2].float(), (s[3] / s[1]).float()) for n, s in sums.items()}


def relative_output_error(w, w_hat, hessian):
    """``||(w_hat - w) X||^2 / ||w X||^2`` over the calibration inputs ``X``, computed from ``H = X X^T``:
    ``tr(E H E^T) / tr(W H W^T)`` with ``E = w_hat - w`` (the layer-wise objective of GPTQ and AWQ)."""
    w, w_hat, h = w.detach().float(), w_hat.detach().float(), hessian.float()  # float32: fast, and precise enough
    e = w_hat - w
    return ((e @ h) * e).sum().item() / ((w @ h) * w).sum().item()


# ---------------------------------------------------------------- GPTQ

def gptq_step(W, U, i, quantize):
    """One column of GPTQ: quantize column ``i`` of ``W`` and spread its error over the columns after it.

    ``U`` is the upper Cholesky factor of the inverse Hessian (``H^-1 = U^T U``) and ``quantize`` maps a column
    to its rounded values. With ``e = (W[:, i] - quantize(W[:, i])) / U[i, i]``, column ``i`` becomes the
    rounded column and every later column ``j`` loses ``e * U[i, j]``. Returns a new tensor.
    """
    _check_weight(W, "W")
    if U.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"U must be [{W.shape[1]}, {W.shape[1]}] for W {tuple(W.shape)}, got {tuple(U.shape)}")
    if not 0 <= i < W.shape[1]:
        raise IndexError(f"column {i} is outside W's {W.shape[1]} columns")
    W = W.clone()
    rounded = quantize(W[:, i])
    error = (W[:, i] - rounded) / U[i, i]
    W[:, i] = rounded
    W[:, i + 1:] -= error[:, None] * U[i, i + 1:][None, :]
    return W


def inverse_hessian_factor(hessian, damp=0.01):
    """``U``, the upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``, as GPTQ uses it (float64).
    Input channels that never fired (``H_jj = 0``) get ``H_jj = 1`` first, as in GPTQ's code."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    h.diagonal().add_(damp * h.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)


def gptq(w, hessian, bits, group_size=None, *, damp=0.01, block=128):
    """GPTQ (Frantar et al., ICLR 2023) on one weight ``[out, in]`` with the Hessian ``H = sum x x^T`` of its
    inputs: the columns are quantized in order (:func:`gptq_step`), each group's grid taken from the weights as
    they stand when the group's first column is reached. ``damp`` adds that fraction of H's mean diagonal
    (1% in the paper). Returns a :class:`QuantizedWeight`. Input channels that never fired are set to zero.

    As in the paper, the updates are applied lazily: within a block of ``block`` columns at once, and to the
    columns after the block in one matrix product when the block is done. The result is the column-by-column
    loop's, up to the order of floating-point additions.
    """
    _check_weight(w)
    _check_bits(bits)
    rows, cols = w.shape
    g = group_length(cols, group_size)
    if hessian.shape != (cols, cols):
        raise ValueError(f"the Hessian must be [{cols}, {cols}] for a weight {tuple(w.shape)}, got {tuple(hessian.shape)}")
    U = inverse_hessian_factor(hessian, damp)
    W = w.detach().double().clone()
    W[:, hessian.diagonal() == 0] = 0.0
    q = torch.empty(rows, cols, dtype=torch.uint8)
    scales, zeros = [], []
    top = 2 ** bits - 1
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        errors = torch.zeros(rows, b1 - b0, dtype=torch.float64)
        for i in range(b0, b1):
            if i % g == 0:  # the group's columns as they stand now: those past the block still owe this block's updates
                current = W[:, i:i + g].clone()
                if i + g > b1:
                    current[:, b1 - i:] -= errors[:, :i - b0] @ U[b0:i, b1:i + g]
                _, scale, zero = quantize_groups(current.float(), bits, None)
                scales.append(scale)
                zeros.append(zero)
                s, z = scale.double()[:, 0], zero.double()[:, 0]
            codes = torch.clamp(torch.round(W[:, i] / s) + z, 0, top)
            q[:, i] = codes.to(torch.uint8)
            errors[:, i - b0] = (W[:, i] - (codes - z) * s) / U[i, i]  # gptq_step's update, column i
            W[:, i + 1:b1] -= errors[:, i - b0, None] * U[i, i + 1:b1][None, :]
        W[:, b1:] -= errors @ U[b0:b1, b1:]  # the block's updates of every later column, in one product
    return QuantizedWeight(q, torch.cat(scales, 1), torch.cat(zeros, 1), bits)


# ---------------------------------------------------------------- AWQ-style scaling and SmoothQuant

def awq_scales(w, stats, bits, group_size=None, *, grid=20):
    """Activation-aware scaling (AWQ, Lin et al., MLSys 2024) of one weight: per input channel ``s = a ** alpha``,
    with ``a`` the channel's mean input magnitude (``stats.absmean``), at least 1e-4, normalised so that
    ``max(s) * min(s) = 1`` (as in the AWQ authors' code); the layer computes ``Q(W * s) @ (x / s)``. ``alpha`` runs over ``0, 1/grid, ...,
    (grid - 1)/grid`` (0 is plain RTN) and the one with the smallest :func:`relative_output_error` is kept.
    Returns a :class:`QuantizedWeight` whose ``info`` holds ``alpha`` and the error of every alpha tried."""
    _check_weight(w)
    _check_bits(bits)
    if stats.absmean.shape != (w.shape[1],):
        raise ValueError(f"statistics of {stats.absmean.shape[0]} input channels for a weight {tuple(w.shape)}")
    w = w.detach().float()
    best, errors = None, {}
    for k in range(grid):
        alpha = k / grid
        s = (stats.absmean ** alpha).clamp(min=1e-4)
        s = (s / (s.max() * s.min()).sqrt()).half()
        q, scale, zero = quantize_groups(w * s.float(), bits, group_size)
        qw = QuantizedWeight(q, scale, zero, bits, s)
        errors[alpha] = relative_output_error(w, qw.dequantize(), stats.hessian)
        if best is None or errors[alpha] < errors[best[0]]:
            best = (alpha, qw)
    best[1].info = {"alpha": best[0], "errors": errors}
    return best[1]


def smooth_scales(act_max, weight_max, alpha=0.5):
    """SmoothQuant's per-input-channel factors (Xiao et al., ICML 2023): ``s_j = max|X_j|**alpha /
    max|W_j|**(1 - alpha)``, with ``max|W_j|`` (over the output channels) at least 1e-5 and ``s`` at least 1e-5,
    as in the paper's code. The activations are divided by ``s`` and the weights multiplied by it."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the migration strength) must lie in [0, 1], got {alpha!r}")
    if act_max.dim() != 1 or act_max.shape != weight_max.shape:
        raise ValueError(f"act_max and weight_max must be 1-D, one value per input channel, of the same length; "
                         f"got {tuple(act_max.shape)} and {tuple(weight_max.shape)}")
    return (act_max.pow(alpha) / weight_max.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


def fake_quantize_symmetric(x, bits, dim=None):
    """``x`` on a symmetric ``bits``-bit grid (``-(2**(bits-1) - 1) .. 2**(bits-1) - 1``) and back: one scale
    ``max|x| / (2**(bits-1) - 1)`` for the whole tensor (``dim=None``) or per slice along ``dim`` (e.g. the
    last dimension: per token for activations, per output channel for a weight)."""
    _check_bits(bits)
    top = 2 ** (bits - 1) - 1
    m = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    s = (m / top).clamp(min=SCALE_FLOOR)
    return torch.clamp(torch.round(x / s), -top, top) * s


class SimulatedW8A8(nn.Module):
    """A Linear layer with ``weight_bits`` weights (symmetric, per output channel) and ``act_bits`` inputs
    (symmetric, one dynamic scale per tensor or per token), optionally smoothed: the input divided by ``s``
    and the weight multiplied by it, before either is rounded. Simulated in float32."""

    def __init__(self, linear, act_bits=8, weight_bits=8, smooth=None, per_token=False):
        super().__init__()
        w = linear.weight.detach().float()
        if smooth is not None:
            w = w * smooth
        self.register_buffer("weight", fake_quantize_symmetric(w, weight_bits, dim=1))
        self.register_buffer("smooth", smooth)
        self.act_bits, self.per_token = act_bits, per_token

    def forward(self, x):
        if self.smooth is not None:
            x = x / self.smooth
        x = fake_quantize_symmetric(x, self.act_bits, dim=-1 if self.per_token else None)
        return F.linear(x, self.weight)


def w8a8_model(model, windows=None, *, act_bits=8, weight_bits=8, alpha=None, per_token=False, factors=None,
               stats=None):
    """A copy of ``model`` with every Linear layer a :class:`SimulatedW8A8`. With ``alpha`` (SmoothQuant),
    each layer's factors come from ``factors(act_max, weight_max, alpha)`` (:func:`smooth_scales` by default)
    with the activation maxima measured on ``windows`` (or taken from ``stats``, :func:`layer_statistics`'s
    result, when it is given)."""
    factors = factors or smooth_scales
    if alpha is not None and stats is None:
        if windows is None:
            raise ValueError("SmoothQuant (alpha given) needs calibration windows to measure max|X| per channel")
        stats = layer_statistics(model, windows)
    if alpha is None:
        stats = None
    model = copy.deepcopy(model)
    for name, linear in _linears(model).items():
        smooth = None
        if stats is not None:
            smooth = factors(stats[name].absmax, linear.weight.detach().abs().amax(0), alpha)
        _set(model, name, SimulatedW8A8(linear, act_bits, weight_bits, smooth, per_token))
    return model


# ---------------------------------------------------------------- whole models

METHODS = ("rtn", "gptq", "awq")


def _blocks(names):
    """Consecutive layer names grouped by their first two parts (``blocks.0.attn.qkv`` -> ``blocks.0``)."""
    groups = []
    for name in names:
        key = ".".join(name.split(".")[:2])
        if groups and groups[-1][0] == key:
            groups[-1][1].append(name)
        else:
            groups.append((key, [name]))
    return [members for _, members in groups]


def quantize_model(model, method, bits, group_size=None, windows=None, *, damp=0.01, grid=20, stats=None):
    """Every Linear layer of a copy of ``model`` quantized by ``method`` (``"rtn"``, ``"gptq"`` or ``"awq"``)
    to ``bits`` bits in groups of ``group_size``; returns ``(model, {name: QuantizedWeight})``, the model
    computing with the dequantized weights (simulated: float32 arithmetic on rounded values).

    GPTQ goes one block at a time (the layers whose names share their first two parts, ``blocks.0``), as
    GPTQ's own code does: the Hessians of a block's layers are measured on ``windows`` with the blocks before
    it already quantized, so that each block also makes up for the earlier blocks' errors. AWQ measures
    every layer on the original model (or takes ``stats``, :func:`layer_statistics` of the original model).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    _check_bits(bits)
    if method != "rtn" and windows is None:
        raise ValueError(f"{method} needs calibration windows (a long tensor [N, T + 1] of bytes)")
    model = copy.deepcopy(model)
    linears = _linears(model)
    for linear in linears.values():  # refuse a bad group size before any work
        group_length(linear.in_features, group_size)
    if method == "awq" and stats is None:
        stats = layer_statistics(model, windows)
    quantized = {}
    for block in _blocks(linears):
        if method == "gptq":  # this block's Hessians, the blocks before it already quantized
            stats = layer_statistics(model, windows, block, stop_after=True)
        for name in block:
            w = linears[name].weight.detach()
            if method == "rtn":
                qw = QuantizedWeight(*quantize_groups(w, bits, group_size), bits)
            elif method == "gptq":
                qw = gptq(w, stats[name].hessian, bits, group_size, damp=damp)
            else:
                qw = awq_scales(w, stats[name], bits, group_size, grid=grid)
            linears[name].weight.data = qw.dequantize().to(w.dtype)
            quantized[name] = qw
    return model, quantized


def tensor_bytes(model):
    """Bytes of every parameter and buffer of ``model`` in memory; a tensor subclass that wraps others (torchao's
    quantized tensors) counts the tensors inside it."""
    def size(t):
        if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()

    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += size(t.data if isinstance(t, nn.Parameter) and type(t.data) is torch.Tensor else t)
    return total
