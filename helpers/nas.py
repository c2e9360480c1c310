"""Architecture search (notebook 11): a search space of small 28x28 networks and a latency lookup table.

A network of the space is shaped like notebook 04's small nets: a stem (3x3 conv, 16 channels, 28x28),
two stages and a head (global average pooling, one linear layer). Each stage is described by a
:class:`Stage`: which block it repeats (the blocks of notebook 04, with a choice of kernel size), how
many times, and a width multiplier. The first block of each stage has stride 2, so the stages work
at 14x14 and 7x7 with 32 and 64 channels at width 1. Notebook 04's plain, ResNet and MobileNet V2 nets
are points of this space (two blocks per stage, kernel 3, width 1).

* :func:`sample_arch`, :func:`mutate` and :func:`space_size` are what a search needs from the space;
  :func:`build` turns an architecture (a tuple of two ``Stage``, one per stage) into an ``nn.Sequential``.
* :class:`LatencyTable` times every distinct layer once on this machine (batch 1, one thread) and
  predicts a network's latency as the sum of its layers' times, as ProxylessNAS and Once-for-All do.
"""
import itertools
import math
from typing import NamedTuple

import pandas as pd
import torch
from torch import nn

from .measure import benchmark

SEARCH_SPACE = {
    "block": ("plain", "resnet", "mobilenet_v1", "mobilenet_v2"),
    "depth": (1, 2, 3, 4),
    "kernel": (3, 5),
    "width": (0.5, 1.0, 1.5, 2.0),
}
STAGES = ((32, 2), (64, 2))  # (channels at width 1, stride of the stage's first block)
STEM_CHANNELS, IMAGE_SIZE, NUM_CLASSES = 16, 28, 10
EXPAND = 6  # MobileNet V2's expansion ratio, as in the paper and torchvision (MnasNet and ProxylessNAS search 3 and 6)


class Stage(NamedTuple):
    """One stage of a network: ``depth`` blocks of kind ``block`` with ``kernel`` x ``kernel`` convolutions."""

    block: str
    depth: int
    kernel: int
    width: float

    def __str__(self):
        return f"{self.block} x{self.depth} k{self.kernel} w{self.width:g}"


class Layer(NamedTuple):
    """What the latency table keys on: one block (or the stem or head) at one input shape."""

    kind: str
    c_in: int
    c_out: int
    stride: int
    kernel: int
    size: int  # height (= width) of the input feature map


def channels(base, width):
    """Channels of a stage: ``base * width`` rounded to a multiple of 8 (at least 8)."""
    return max(8, round(base * width / 8) * 8)


def space_size():
    """How many different networks the space holds: (choices per stage) ** (number of stages)."""
    return math.prod(len(options) for options in SEARCH_SPACE.values()) ** len(STAGES)


def check_arch(arch):
    """Raise a ValueError that says what is wrong unless ``arch`` is a network of the space."""
    if not isinstance(arch, (tuple, list)) or len(arch) != len(STAGES):
        raise ValueError(f"an architecture is a tuple of {len(STAGES)} Stage(block, depth, kernel, width); got {arch!r}")
    for i, stage in enumerate(arch):
        stage = Stage(*stage) if isinstance(stage, (tuple, list)) and len(stage) == 4 else stage
        if not isinstance(stage, Stage):
            raise ValueError(f"stage {i} must be a Stage(block, depth, kernel, width), got {stage!r}")
        for field, value in stage._asdict().items():
            if isinstance(value, bool) or value not in SEARCH_SPACE[field]:
                raise ValueError(f"stage {i}: {field}={value!r} is not in the search space; choose one of {SEARCH_SPACE[field]}")
    return tuple(Stage(*stage) for stage in arch)


def sample_arch(rng):
    """A network drawn uniformly from the space; ``rng`` is a ``random.Random`` (seed it to repeat a draw)."""
    return tuple(Stage(*(rng.choice(SEARCH_SPACE[field]) for field in Stage._fields)) for _ in STAGES)


def mutate(arch, rng):
    """A copy of ``arch`` with one choice of one stage changed to a different value."""
    arch = list(check_arch(arch))
    i, field = rng.randrange(len(arch)), rng.choice(Stage._fields)
    value = rng.choice([v for v in SEARCH_SPACE[field] if v != getattr(arch[i], field)])
    arch[i] = arch[i]._replace(**{field: value})
    return tuple(arch)


def describe(arch):
    """The stages on one line, e.g. ``'mobilenet_v2 x2 k5 w1 | plain x1 k3 w2'`` (block x depth, kernel, width)."""
    return " | ".join(str(stage) for stage in check_arch(arch))


# ---------------------------------------------------------------- the blocks, with a kernel-size choice

def _conv_bn(c_in, c_out, kernel, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return layers + [act(inplace=True)] if act else layers


class _Residual(nn.Module):
    """``body(x) + shortcut(x)``, then an optional ReLU: ResNet's basic block and MobileNet V2's residual."""

    def __init__(self, body, shortcut, relu):
        super().__init__()
        self.body, self.shortcut, self.relu = body, shortcut, nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def search_block(kind, c_in, c_out, stride, kernel):
    """One block of the space (notebook 04 builds each one and explains it)."""
    if kind == "plain":  # VGG: conv-BN-ReLU
        return nn.Sequential(*_conv_bn(c_in, c_out, kernel, stride))
    if kind == "resnet":  # basic block: two convs and a shortcut (1x1 conv where the shape changes)
        shortcut = (nn.Identity() if stride == 1 and c_in == c_out
                    else nn.Sequential(*_conv_bn(c_in, c_out, 1, stride, act=None)))
        body = nn.Sequential(*_conv_bn(c_in, c_out, kernel, stride), *_conv_bn(c_out, c_out, kernel, act=None))
        return _Residual(body, shortcut, relu=True)
    if kind == "mobilenet_v1":  # depthwise-separable: depthwise k x k, then pointwise 1x1
        return nn.Sequential(*_conv_bn(c_in, c_in, kernel, stride, groups=c_in), *_conv_bn(c_in, c_out, 1))
    if kind == "mobilenet_v2":  # inverted residual: expand 1x1, depthwise k x k, linear 1x1 projection
        hidden = c_in * EXPAND
        body = nn.Sequential(*_conv_bn(c_in, hidden, 1, act=nn.ReLU6), *_conv_bn(hidden, hidden, kernel, stride, hidden, nn.ReLU6),
                             *_conv_bn(hidden, c_out, 1, act=None))
        if stride == 1 and c_in == c_out:
            return _Residual(body, nn.Identity(), relu=False)
        return body
    raise ValueError(f"unknown block {kind!r}; choose one of {SEARCH_SPACE['block']}")


def make_layer(layer):
    """The module for one :class:`Layer` (stem, block or head); ``build`` is these in a row."""
    if layer.kind == "stem":
        return nn.Sequential(*_conv_bn(layer.c_in, layer.c_out, layer.kernel, layer.stride))
    if layer.kind == "head":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(layer.c_in, layer.c_out))
    return search_block(layer.kind, layer.c_in, layer.c_out, layer.stride, layer.kernel)


def layers(arch, in_channels=1):
    """The network as a list of :class:`Layer`: stem, every block with its input shape, head."""
    arch = check_arch(arch)
    size, c = IMAGE_SIZE, STEM_CHANNELS
    out = [Layer("stem", in_channels, c, 1, 3, size)]
    for (base, stride), stage in zip(STAGES, arch):
        c_out = channels(base, stage.width)
        for i in range(stage.depth):
            s = stride if i == 0 else 1
            out.append(Layer(stage.block, c, c_out, s, stage.kernel, size))
            size, c = (size + s - 1) // s, c_out
    return out + [Layer("head", c, NUM_CLASSES, 1, 1, size)]


def build(arch, in_channels=1):
    """The network ``arch`` describes, as an ``nn.Sequential`` of stem, blocks and head (untrained):
    ``build(arch)[i]`` is the module of ``layers(arch)[i]``."""
    return nn.Sequential(*(make_layer(layer) for layer in layers(arch, in_channels)))


def all_layers():
    """Every distinct :class:`Layer` that some network of the space contains (what a full table times)."""
    found, widths, deepest = {}, SEARCH_SPACE["width"], max(SEARCH_SPACE["depth"])
    for w_prev in widths:
        for stage in (Stage(b, deepest, k, w) for b in SEARCH_SPACE["block"] for k in SEARCH_SPACE["kernel"] for w in widths):
            for position in range(len(STAGES)):
                arch = [Stage("plain", 1, 3, w_prev)] * len(STAGES)
                arch[position] = stage
                found.update(dict.fromkeys(layers(arch)))
    return list(found)


class LatencyTable:
    """Per-layer latencies measured on this machine, summed to predict a whole network's latency.

    ``table.predict(arch)`` times any layer it has not seen yet (once), so a table fills up as a
    search goes; ``table.fill(all_layers())`` times the whole space up front. Times are medians of
    ``repeat`` calls at batch 1 on ``threads`` threads, in milliseconds.
    """

    def __init__(self, threads=1, warmup=3, repeat=20):
        self.threads, self.warmup, self.repeat = threads, warmup, repeat
        self.ms = {}

    def fill(self, layer_list):
        for layer in layer_list:
            if layer not in self.ms:
                torch.manual_seed(0)
                x = torch.randn(1, layer.c_in, layer.size, layer.size)
                timing = benchmark(make_layer(layer), x, threads=self.threads, warmup=self.warmup, repeat=self.repeat)
                self.ms[layer] = timing.median * 1e3
        return self

    def predict(self, arch):
        """Predicted latency of ``arch`` in milliseconds: the sum of its layers' measured times."""
        self.fill(layers(arch))
        return predict_latency(arch, self.ms)

    def __len__(self):
        return len(self.ms)

    def to_frame(self):
        """The table as a DataFrame, one row per layer."""
        return pd.DataFrame([{**layer._asdict(), "ms": ms} for layer, ms in self.ms.items()])


def predict_latency(arch, ms):
    """The lookup-table prediction: the sum of ``ms[layer]`` over the layers of ``arch`` (notebook 11, §3).

    ``ms`` maps a :class:`Layer` to milliseconds; a layer it does not hold is a KeyError that names it.
    """
    total = 0.0
    for layer in layers(arch):
        if layer not in ms:
            raise KeyError(f"the table has no time for {layer}: time it first (LatencyTable.fill)")
        total += ms[layer]
    return total


def evolution_step(alive, score, rng, sample, mutate):
    """One step of aging evolution (Real et al., 2019), as notebook 11 writes it.

    ``alive`` lists the population, oldest first. Draw ``rng.sample(alive, sample)``, take the member with
    the highest ``score``, and make its child ``mutate(parent, rng)``. The child joins at the young end
    and the oldest member dies, however good it was. Returns ``(child, new_alive)``; ``alive`` itself is
    not changed.
    """
    if isinstance(sample, bool) or not isinstance(sample, int) or not 1 <= sample <= len(alive):
        raise ValueError(f"sample must be a whole number from 1 to the population's size {len(alive)}, got {sample!r}")
    parent = max(rng.sample(list(alive), sample), key=score)
    child = mutate(parent, rng)
    return child, list(alive)[1:] + [child]


def fastest_arch(table):
    """The network of the space that ``table`` predicts to be fastest (every stage: one block, kernel 3,
    the smallest width; the block kind that is quickest here)."""
    blocks, w = SEARCH_SPACE["block"], min(SEARCH_SPACE["width"])
    combos = ([Stage(b, 1, 3, w) for b in choice] for choice in itertools.product(blocks, repeat=len(STAGES)))
    return min((tuple(arch) for arch in combos), key=table.predict)


def within_budget(propose, table, budget_ms, tries=10_000):
    """Call ``propose()`` until it returns a network that ``table`` predicts at ``budget_ms`` or less.

    A search uses it to draw (``lambda: sample_arch(rng)``) or to mutate (``lambda: mutate(parent, rng)``)
    inside a latency budget. Raises a ValueError that says how fast the space can go when nothing fits.
    """
    if isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) or not budget_ms > 0:
        raise ValueError(f"budget_ms must be a latency in milliseconds > 0, got {budget_ms!r}")
    for _ in range(tries):
        arch = propose()
        if table.predict(arch) <= budget_ms:
            return arch
    fastest = table.predict(fastest_arch(table))
    raise ValueError(f"found no network predicted at {budget_ms} ms or less in {tries:,} tries; the fastest network "
                     f"of the space is predicted at {fastest:.3g} ms on this machine. Raise the budget.")


def pareto_front(points):
    """Indices of the points ``(latency, accuracy)`` that no other point dominates, sorted by latency.

    A point dominates another if it is at least as fast and at least as accurate, and strictly better
    in one of the two; so two identical points are both on the front. One pass in order of latency
    (then of accuracy, best first): a point is on the front if it is more accurate than every faster
    point, or repeats the front's last point exactly.
    """
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in points):
        raise ValueError("pareto_front expects a list of (latency, accuracy) pairs")
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best or (front and tuple(points[front[-1]]) == tuple(points[i])):
            front.append(i)
            best = points[i][1]
    return front
