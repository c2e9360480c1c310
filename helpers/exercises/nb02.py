"""Notebook 02 (grouped and depthwise-separable convolutions): a grouped convolution from ordinary ones,
MobileNet V1's depthwise-separable block, and three costs worked out by hand."""
import zlib

import torch
from torch import nn

from .. import convs
from . import Case, exercise, same_output


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@exercise("02.1", "a grouped convolution is g ordinary convolutions side by side", reference=convs.grouped_conv,
          hint="Group j takes the j-th block of C_in/g consecutive input channels and the j-th block of C_out/g "
               "consecutive filters (x.chunk / weight.chunk); concatenate the g results along the channels.")
def _grouped_cases():
    x8, x6 = _randn(2, 8, 6, 6, seed=0), _randn(1, 6, 5, 7, seed=1)
    return [Case("8 -> 6 channels in 2 groups, 3x3, padding 1", (x8, _randn(6, 4, 3, 3, seed=2), 2), {"padding": 1}),
            Case("groups = 1: an ordinary convolution", (x6, _randn(4, 6, 3, 3, seed=3), 1), {"padding": 1}),
            Case("depthwise: 6 -> 6 channels in 6 groups", (x6, _randn(6, 1, 3, 3, seed=4), 6), {"padding": 1}),
            Case("6 -> 12 channels in 3 groups (4 filters per group), padding 0", (x6, _randn(12, 2, 3, 3, seed=5), 3)),
            Case("4 groups divide the 8 input channels but not the 6 filters", (x8, _randn(6, 2, 3, 3, seed=6), 4),
                 raises=ValueError),
            Case("an ordinary conv's weight [6, 8, 3, 3] with groups = 2 (each filter needs C_in/g = 4 channels)",
                 (x8, _randn(6, 8, 3, 3, seed=7), 2), raises=ValueError)]


# ---------------------------------------------------------------- 02.2: compared by parameter count and output

def _fill(module):
    """Give every parameter and buffer numbers that depend only on its shape: two blocks built alike then compute
    the same function, whatever their layers are called. (1-D tensors, the BN's, get numbers in [0.5, 1.5], so
    that a running variance stays positive.)"""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                g = torch.Generator().manual_seed(zlib.crc32(str(tuple(tensor.shape)).encode()))
                values = torch.rand(tensor.shape, generator=g)
                tensor.copy_(values + 0.5 if tensor.dim() == 1 else 2 * values - 1)


def _same_block(got, want):
    """None when ``got`` has ``want``'s parameter count and, given the same numbers, computes the same output."""
    if not isinstance(got, nn.Module):
        return f"returned {type(got).__name__}, expected an nn.Module (an nn.Sequential, say)"
    n_got, n_want = (sum(p.numel() for p in m.parameters()) for m in (got, want))
    if n_got != n_want:
        return f"{n_got:,} parameters, expected {n_want:,}"
    c_in = next(m for m in want.modules() if isinstance(m, nn.Conv2d)).in_channels
    probe = _randn(2, c_in, 9, 9, seed=8)
    for module in (got, want):
        _fill(module)
        module.eval()
    return same_output(got, want, probe, prefix="the right parameter count, but the output's ")


@exercise("02.2", "MobileNet V1's depthwise-separable block", reference=convs.depthwise_separable, compare=_same_block,
          hint="In this order: depthwise conv, weight [c_in, 1, k, k] (groups=c_in); BatchNorm2d; ReLU; pointwise "
               "conv, weight [c_out, c_in, 1, 1]; BatchNorm2d; ReLU. No bias in the convolutions.")
def _separable_cases():
    return [Case("32 -> 64 channels, 3x3, stride 1", (32, 64)),
            Case("16 -> 16 channels, 5x5", (16, 16), {"k": 5}),
            Case("16 -> 32 channels, stride 2 (halves the map)", (16, 32), {"stride": 2}),
            Case("8 -> 24 channels, 1x1 depthwise kernel", (8, 24), {"k": 1}),
            Case("k = 4: padding k // 2 cannot keep the size of the map", (16, 32), {"k": 4}, raises=ValueError),
            Case("c_in = 0 channels", (0, 32), raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _separable_fraction():
    from ..measure import count_macs

    x = torch.zeros(1, 32, 8, 8)
    separable = nn.Sequential(nn.Conv2d(32, 32, 5, padding=2, groups=32, bias=False), nn.Conv2d(32, 64, 1, bias=False))
    return count_macs(separable, x) / count_macs(nn.Conv2d(32, 64, 5, padding=2, bias=False), x)


exercise("02.3", "the parameters of nn.Conv2d(64, 128, 3, groups=4, bias=False)",
         expected=lambda: sum(p.numel() for p in nn.Conv2d(64, 128, 3, groups=4, bias=False).parameters()),
         hint="Each of the C_out filters sees only C_in / g channels: C_out * (C_in / g) * k * k.")
exercise("02.4", "a depthwise-separable 5x5 convolution's share of the standard one's MACs",
         expected=_separable_fraction, rel_tol=1e-3,
         hint="Per output pixel: depthwise k^2 * C_in, pointwise C_in * C_out, standard k^2 * C_in * C_out.")
exercise("02.5", "the group counts allowed from 12 to 18 channels", expected=lambda: convs.valid_groups(12, 18),
         hint="g must divide both 12 and 18, so it divides their greatest common divisor. A list, smallest first.")
