"""Notebook 00 (measuring a model): a convolution's MACs from its shape, the layer calls of one forward
pass (forward hooks), the median and spread of timed calls, and one parameter count worked out."""
import random

import torch
import torchvision
from torch import nn

from .. import measure
from ..models import small_vgg
from . import Case, _short, difference, exercise


def _fresh(build):
    """``build()`` without touching the global random state (building a layer draws its initial weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


@exercise("00.1", "a convolution's MACs from its shape", reference=measure.conv_macs,
          hint="One MAC per weight of a filter, (C_in / groups) x k_h x k_w, for each of the "
               "N x C_out x H_out x W_out output values; H_out and W_out from the output-size formula.")
def _conv_macs_cases():
    return _fresh(lambda: [
        Case("nn.Conv2d(6, 30, 3) on a 1x6x112x112 input", (nn.Conv2d(6, 30, 3), (1, 6, 112, 112))),
        Case("groups=3: each filter sees 6 / 3 channels", (nn.Conv2d(6, 30, 3, groups=3), (1, 6, 112, 112))),
        Case("a batch of 8 images", (nn.Conv2d(16, 32, 1), (8, 16, 14, 14))),
        Case("stride 2, padding 1 on a 15x20 input (the output size rounds down)",
             (nn.Conv2d(16, 8, 3, stride=2, padding=1), (1, 16, 15, 20))),
        Case("a 3x5 kernel, dilation 2, padding (2, 0)",
             (nn.Conv2d(4, 8, (3, 5), dilation=2, padding=(2, 0)), (1, 4, 12, 12))),
        Case("depthwise: groups = channels, no bias",
             (nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), (1, 32, 28, 28))),
        Case("a dilated kernel exactly as wide as the input: a 1x1 output", (nn.Conv2d(3, 5, 5, dilation=2), (1, 3, 9, 9))),
        Case("an input with 3 channels for a layer that expects 6 → ValueError", (nn.Conv2d(6, 30, 3), (1, 3, 112, 112)),
             raises=ValueError),
        Case("an input smaller than the dilated kernel (no output) → ValueError", (nn.Conv2d(6, 30, 3, dilation=4), (1, 6, 8, 8)),
             raises=ValueError),
    ])


class _TwiceReLU(nn.Module):
    """A layer that uses one ReLU module twice, as ResNet's blocks do."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.conv(self.relu(x)))


def _same_calls(got, want):
    """``None`` when ``got`` lists the same calls as ``want`` (layer types and value counts), with no hook left."""
    if not isinstance(got, (list, tuple)) or not all(isinstance(c, (list, tuple)) and len(c) == 2 for c in got):
        return f"returned {_short(got)}, expected a list of (module, number of values) pairs"
    if any(isinstance(m, nn.Module) and (m._forward_hooks or m._forward_pre_hooks) for m, _ in got):
        return "hooks are still attached to the layers after the pass: remove each one (handle.remove())"
    for i, ((module, values), (expected_module, expected_values)) in enumerate(zip(got, want), 1):
        if type(module) is not type(expected_module):
            return f"call {i} is {type(module).__name__}, expected {type(expected_module).__name__}"
        if values != expected_values:
            return f"call {i} ({type(module).__name__}) wrote {_short(values)} values, expected {expected_values:,}"
    if len(got) > len(want):
        extra = ", ".join(type(m).__name__ for m, _ in got[len(want):len(want) + 3])
        return f"{len(got)} calls, expected {len(want)}: the first {len(want)} are right, then extra calls ({extra})"
    if len(got) < len(want):
        return (f"only {len(got)} calls, expected {len(want)}: the next should be "
                f"{type(want[len(got)][0]).__name__} (a module called twice appears twice)")
    return None


@exercise("00.2", "the layer calls of one forward pass, with forward hooks", reference=measure.layer_calls,
          compare=_same_calls,
          hint="Hook only the leaves (modules with no children); append (module, output.numel()) at every "
               "call; remove the hooks afterwards.")
def _layer_calls_cases():
    g = torch.Generator().manual_seed(0)

    def cases():
        nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), nn.ReLU(),
                               nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, 10)))
        return [
            Case("the course's small VGG-like net on one 28x28 image",
                 (small_vgg().eval(), torch.randn(1, 1, 28, 28, generator=g))),
            Case("a ResNet bottleneck calls its one ReLU module three times",
                 (torchvision.models.resnet.Bottleneck(16, 4).eval(), torch.randn(1, 16, 8, 8, generator=g))),
            Case("a module used twice in one forward", (_TwiceReLU().eval(), torch.randn(1, 1, 5, 5, generator=g))),
            Case("containers inside containers: only the leaves are layers",
                 (nested.eval(), torch.randn(1, 1, 8, 8, generator=g))),
            Case("a batch of 4 images", (small_vgg().eval(), torch.randn(4, 1, 28, 28, generator=g))),
            Case("a bare layer is its own leaf", (nn.Conv2d(1, 2, 3), torch.randn(1, 1, 5, 5, generator=g))),
            Case("a function, not an nn.Module → TypeError", (torch.relu, torch.randn(1, 4, generator=g)), raises=TypeError),
        ]

    return _fresh(cases)


def _median_and_spread(got, want):
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        return f"returned {_short(got)}, expected a pair (median, iqr)"
    for name, g, w in zip(("the median", "the spread (iqr)"), got, want):
        problem = difference(g, w, rel_tol=1e-9, abs_tol=1e-12)
        if problem:
            return f"{name}: {problem}"
    return None


@exercise("00.3", "the median and the inter-quartile range of timed calls", reference=measure.median_iqr,
          compare=_median_and_spread,
          hint="median: the middle of the sorted times (statistics.median); iqr = q3 - q1 with "
               "q1, _, q3 = statistics.quantiles(times, n=4); one call has no spread.")
def _median_iqr_cases():
    rng = random.Random(0)
    steady = [round(rng.uniform(0.0009, 0.0013), 6) for _ in range(7)]
    return [Case("eight calls, the first one slow (warm-up)",
                 ([0.0051, 0.0012, 0.0010, 0.0011, 0.0013, 0.0009, 0.0010, 0.0012],)),
            Case("seven calls, in the order they were timed", (steady,)),
            Case("a very slow call in the middle", (steady[:3] + [0.25] + steady[3:],)),
            Case("every call took the same time: no spread", ([0.002] * 6,)),
            Case("a single call: no spread", ([0.004],)),
            Case("no calls at all → ValueError", ([],), raises=ValueError),
            Case("a negative duration → ValueError", ([0.001, -0.002, 0.001],), raises=ValueError)]


exercise("00.4", "the parameters of a depthwise-separable convolution",
         expected=lambda: measure.count_params(nn.Sequential(nn.Conv2d(32, 32, 3, groups=32, bias=False),
                                                             nn.Conv2d(32, 64, 1, bias=False))),
         hint="With groups=32 each of the depthwise layer's 32 filters sees one channel: [C_out, C_in / g, k, k].")
