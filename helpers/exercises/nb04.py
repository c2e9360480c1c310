"""Notebook 04 (efficient blocks): MobileNet V2's inverted residual, a squeeze-and-excitation module, top-k
accuracy from logits, and two parameter counts worked out by hand."""
import zlib

import torch
from torch import nn

from .. import models
from ..train import topk_accuracy
from . import Case, exercise, same_output


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 04.1, 04.2: a block, compared with torchvision's

def _fill(module):
    """Numbers for every parameter and buffer that depend only on the tensor's shape and place (1-D tensors, the
    BN's and the biases, get numbers in [0.5, 1.5], so that a running variance stays positive)."""
    with torch.no_grad():
        for i, tensor in enumerate(module.state_dict().values()):
            if tensor.is_floating_point():
                g = torch.Generator().manual_seed(zlib.crc32(f"{i} {tuple(tensor.shape)}".encode()))
                values = torch.rand(tensor.shape, generator=g)
                tensor.copy_(values + 0.5 if tensor.dim() == 1 else 2 * values - 1)


def _same_block(got, want):
    """None when ``got`` has ``want``'s parameter count and layers (their weights in the same order and shapes)
    and, given ``want``'s numbers, computes the same output on a probe input; else what differs."""
    if not isinstance(got, nn.Module):
        return f"returned {type(got).__name__}, expected an nn.Module (an nn.Sequential, say)"
    n_got, n_want = (sum(p.numel() for p in m.parameters()) for m in (got, want))
    if n_got != n_want:
        return f"{n_got:,} parameters, expected {n_want:,}"
    mine, theirs = got.state_dict(), want.state_dict()
    shapes = [tuple(t.shape) for t in mine.values()], [tuple(t.shape) for t in theirs.values()]
    if shapes[0] != shapes[1]:
        i = next((i for i, (a, b) in enumerate(zip(*shapes)) if a != b), min(map(len, shapes)))
        where = f"entry {i} of your state_dict ({list(mine)[i]}) has shape {shapes[0][i]}" if i < len(shapes[0]) \
            else f"your state_dict has {len(shapes[0])} entries"
        wanted = f"{shapes[1][i]}" if i < len(shapes[1]) else f"only {len(shapes[1])} entries"
        return (f"the right parameter count, but the layers differ: {where}, expected {wanted} "
                "(keep the docstring's order)")
    _fill(want)
    got.load_state_dict(dict(zip(mine, want.state_dict().values())))
    got.eval()
    want.eval()
    c_in = next(m for m in want.modules() if isinstance(m, nn.Conv2d)).in_channels
    probe = _randn(2, c_in, 9, 9, seed=4)
    return same_output(got, want, probe, prefix="the right layers, but with torchvision's weights copied in, the output's ")


@exercise("04.1", "MobileNet V2's inverted residual block", reference=models.inverted_residual, compare=_same_block,
          hint="In order: 1x1 conv, BN, ReLU6 (not when expand = 1); depthwise 3x3 conv (stride, padding 1), BN, "
               "ReLU6; 1x1 conv, BN, no activation. Residual(...) only when stride = 1 and c_in = c_out.")
def _inverted_cases():
    return [Case("32 -> 32 channels, stride 1, expand 6: shape kept, so a shortcut", (32, 32)),
            Case("16 -> 24 channels, stride 2: no shortcut", (16, 24), {"stride": 2}),
            Case("24 -> 32 channels, stride 1: the channels change, so no shortcut", (24, 32)),
            Case("16 -> 16 channels, stride 2: the map shrinks, so no shortcut", (16, 16), {"stride": 2}),
            Case("32 -> 16 channels, expand = 1 as in the table's first row: no expansion conv", (32, 16),
                 {"expand": 1}),
            Case("16 -> 16 channels, expand 4", (16, 16), {"expand": 4}),
            Case("stride 3 (MobileNet V2 uses 1 or 2)", (16, 16), {"stride": 3}, raises=ValueError),
            Case("expand = 0 (no channels to filter)", (16, 16), {"expand": 0}, raises=ValueError)]


@exercise("04.2", "a squeeze-and-excitation module", reference=models.squeeze_excite, compare=_same_block,
          hint="Gate(nn.Sequential(...)): average pool to 1x1, 1x1 conv c -> c // reduction (with bias), ReLU, "
               "1x1 conv back to c (with bias), sigmoid; the gate multiplies x channel by channel.")
def _excite_cases():
    return [Case("64 channels, reduction 16: 4 squeezed channels", (64,)),
            Case("48 channels, reduction 4", (48,), {"reduction": 4}),
            Case("24 channels, reduction 16: 24 // 16 = 1 squeezed channel", (24,)),
            Case("reduction = 1: the squeeze keeps every channel", (16,), {"reduction": 1}),
            Case("8 channels, reduction 16: 8 // 16 = 0 channels left", (8,), raises=ValueError),
            Case("reduction = 0", (16,), {"reduction": 0}, raises=ValueError)]


# ---------------------------------------------------------------- 04.3: top-k accuracy

@exercise("04.3", "top-k accuracy from logits", reference=topk_accuracy,
          hint="logits.topk(k, dim=1).indices is [N, k]: a row counts once if its label is anywhere among "
               "its k classes; the result is the share of rows that count.")
def _topk_cases():
    logits, labels = _randn(64, 10, seed=0), torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(1))
    big = _randn(200, 1000, seed=2)
    near = big.argsort(dim=1, descending=True)[:, 3]  # each row's 4th-highest class: in its top 5, not its top 3
    return [Case("64 images, 10 classes, k = 3", (logits, labels, 3)),
            Case("k = 1: the ordinary accuracy", (logits, labels, 1)),
            Case("k = 10 = the number of classes: every label is among them", (logits, labels, 10)),
            Case("1000 classes, every label 4th highest, k = 5", (big, near, 5)),
            Case("1000 classes, every label 4th highest, k = 3", (big, near, 3)),
            Case("one image", (logits[:1], labels[:1], 2)),
            Case("k = 0", (logits, labels, 0), raises=ValueError),
            Case("k = 11 with 10 classes", (logits, labels, 11), raises=ValueError),
            Case("64 rows of logits but 63 labels", (logits, labels[:63], 1), raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _bottleneck_convs():
    from torchvision.models.resnet import Bottleneck

    block = Bottleneck(256, 64)
    return sum(p.numel() for conv in (block.conv1, block.conv2, block.conv3) for p in conv.parameters())


def _stack_fraction():
    def params(k):
        return sum(p.numel() for p in nn.Conv2d(64, 64, k, bias=False).parameters())

    return 3 * params(3) / params(7)


exercise("04.4", "the parameters of a ResNet bottleneck's three convolutions on 256 channels",
         expected=_bottleneck_convs,
         hint="1x1 from 256 to 64 channels, 3x3 from 64 to 64, 1x1 from 64 back to 256: C_out * C_in * k * k each.")
exercise("04.5", "three stacked 3x3 convolutions' share of one 7x7 convolution's parameters",
         expected=_stack_fraction, rel_tol=1e-3,
         hint="Per pair of input and output channels a k x k convolution has k^2 weights; the channels cancel.")
