"""Diagrams of blocks, drawn from the module itself, so that a picture never disagrees with the code.

:func:`block_diagram` traces a module with ``torch.fx`` (the same graph PyTorch's own tools read),
runs an example input through it to learn every tensor's shape, and draws the data path: one box per
layer (kernel, channels, groups, stride, read from the layer), arrows for the data, the shortcut as
an arc around the boxes it skips, and the points where paths split and meet (add, concat, multiply).
A convolution followed by its BatchNorm and activation is drawn as one box ("+ BN + ReLU"). Because
the picture comes from the graph, a block that changes (another kernel, other groups, a branch
removed) draws differently.

* :func:`block_diagram`: one block (or a small stack of layers), as a Figure.
* :func:`merge_diagram`: a block before and after it is rewritten (BN folded, branches merged).
* :func:`grouped_conv_diagram`: ``nn.Conv2d(groups=g)`` drawn as what it computes: split, g convs, concat.
* :func:`shuffle_diagram`: where each channel goes in a channel shuffle, read from ``nn.ChannelShuffle``.
* :func:`pipeline_diagram`: a chain of compression steps with measured ratios under each.

Each returns a ``matplotlib.figure.Figure``; show it with :func:`helpers.show`.
"""
import copy
import inspect
import operator

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

MAX_BOXES = 40  # more than this is a network, not a block: draw one of its blocks
BOX_W, BOX_H, DX, DY = 2.7, 0.55, 3.1, 0.85
COLOURS = {"conv": "#cfe2f3", "depthwise": "#d9ead3", "linear": "#fce5cd", "pool": "#ead1dc", "act": "#eeeeee",
           "merge": "#fff2cc", "split": "#fff2cc", "io": "#ffffff", "shuffle": "#f4cccc", "other": "#eeeeee"}
ACTIVATIONS = {nn.ReLU: "ReLU", nn.ReLU6: "ReLU6", nn.LeakyReLU: "LeakyReLU", nn.Sigmoid: "sigmoid",
               nn.Hardsigmoid: "hard sigmoid", nn.Hardswish: "hard swish", nn.SiLU: "SiLU", nn.GELU: "GELU",
               nn.Tanh: "tanh", F.relu: "ReLU", F.relu6: "ReLU6", F.leaky_relu: "LeakyReLU", torch.relu: "ReLU",
               torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.hardsigmoid: "hard sigmoid", F.silu: "SiLU",
               F.gelu: "GELU", F.hardtanh: "ReLU6", torch.tanh: "tanh", "relu": "ReLU", "sigmoid": "sigmoid"}
MERGES = {operator.add: "add", torch.add: "add", operator.iadd: "add", torch.cat: "concat", torch.concat: "concat",
          operator.mul: "multiply", torch.mul: "multiply", "add": "add", "mul": "multiply"}
SKIP_METHODS = {"contiguous", "clone", "detach"}


# ------------------------------------------------------------------ reading a module

def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


def _kernel(value):
    k = _pair(value)
    return f"{k[0]}×{k[1]}"


def describe(layer):
    """A short label for one layer, read from its attributes: ``(kind, text)``."""
    if isinstance(layer, nn.Conv2d):
        depthwise = layer.groups == layer.in_channels == layer.out_channels and layer.groups > 1
        text = f"{_kernel(layer.kernel_size)} {'depthwise ' if depthwise else ''}conv {layer.in_channels}→{layer.out_channels}"
        extras = [f"g={layer.groups}"] if layer.groups > 1 and not depthwise else []
        extras += [f"stride {_pair(layer.stride)[0]}"] if _pair(layer.stride) != (1, 1) else []
        extras += [f"dilation {_pair(layer.dilation)[0]}"] if _pair(layer.dilation) != (1, 1) else []
        return ("depthwise" if depthwise else "conv"), text + (", " + ", ".join(extras) if extras else "")
    if isinstance(layer, nn.Linear):
        return "linear", f"Linear {layer.in_features}→{layer.out_features}"
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "act", "BN"
    if type(layer) in ACTIVATIONS:
        return "act", ACTIVATIONS[type(layer)]
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(layer, nn.MaxPool2d) else "avg"
        stride = _pair(layer.stride)[0]
        return "pool", f"{_kernel(layer.kernel_size)} {kind} pool" + (f", stride {stride}" if stride != 1 else "")
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        kind = "avg" if isinstance(layer, nn.AdaptiveAvgPool2d) else "max"
        return "pool", (f"global {kind} pool" if _pair(layer.output_size) == (1, 1) else f"adaptive {kind} pool")
    if isinstance(layer, nn.ChannelShuffle):
        return "shuffle", f"channel shuffle, g={layer.groups}"
    if isinstance(layer, nn.Flatten):
        return "other", "flatten"
    if isinstance(layer, nn.Dropout):
        return "act", "dropout"
    return "other", type(layer).__name__


def _function_label(node):
    target = node.target
    if node.op == "call_method" and target == "chunk" or target is torch.chunk:
        return "split", f"split in {node.args[1] if len(node.args) > 1 else node.kwargs.get('chunks')}"
    if target in MERGES:
        return "merge", MERGES[target]
    if target in ACTIVATIONS:
        return "act", ACTIVATIONS[target]
    name = getattr(target, "__name__", str(target))
    if "shuffle" in name:
        groups = node.args[1] if len(node.args) > 1 else node.kwargs.get("groups")
        return "shuffle", f"channel shuffle, g={groups}"
    if name in ("adaptive_avg_pool2d", "mean"):
        return "pool", "global avg pool"
    if name in ("flatten", "view", "reshape"):
        return "other", "reshape"
    if name == "scaled_dot_product_attention":
        return "other", "attention: softmax(QKᵀ/√d) V"
    if name in ("split_heads", "merge_heads"):
        return "other", name.replace("_", " ")
    return "other", name


class _Tracer(fx.Tracer):
    def __init__(self, wrap):
        super().__init__(autowrap_functions=tuple(wrap))


def _graph(module, example, wrap):
    """The simplified graph: a list of dicts (label, kind, inputs, shape), in execution order."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"block_diagram draws an nn.Module, not {type(module).__name__}")
    if not list(module.children()):  # a single layer: trace it as a one-layer Sequential, not its F.* call
        module = nn.Sequential(module)
    module = copy.deepcopy(module).eval()  # the example input must not move a BatchNorm's running statistics
    try:
        fixed = {name: p.default for name, p in list(inspect.signature(module.forward).parameters.items())[1:]
                 if p.default is not inspect.Parameter.empty}  # e.g. a transformer block's cache=None: not drawn
        traced = fx.GraphModule(module, _Tracer(wrap).trace(module, concrete_args=fixed or None))
    except Exception as error:  # fx says which line of forward it could not follow
        raise ValueError(f"torch.fx could not trace {type(module).__name__} ({error}); a function it cannot "
                         "follow can be passed as wrap=[function]") from error
    try:
        with torch.no_grad():
            ShapeProp(traced).propagate(example)
    except Exception as error:
        raise ValueError(f"an input of shape {tuple(example.shape)} does not go through "
                         f"{type(module).__name__}: {error}") from error
    nodes, alias = [], {}  # alias: fx node -> index in nodes of the box that stands for it
    for node in traced.graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = tuple(meta.shape) if hasattr(meta, "shape") else None
        inputs = sorted({alias[a] for a in node.all_input_nodes if a in alias})
        if node.op != "output" and meta is None:  # no tensor: a fixed argument, shape arithmetic, an assert
            continue
        if node.op == "placeholder":
            kind, text = "io", "input"
        elif node.op == "output":
            kind, text = "io", "output"
            shape = nodes[inputs[0]]["shape"] if inputs else None
        elif node.op == "call_module":
            kind, text = describe(traced.get_submodule(node.target))
        elif node.op in ("call_function", "call_method"):
            if node.target is operator.getitem or (node.op == "call_method" and node.target in SKIP_METHODS):
                alias[node] = inputs[0]  # one half of a split, or a copy: the same box
                continue
            kind, text = _function_label(node)
        else:  # get_attr: a parameter used directly
            continue
        nodes.append({"kind": kind, "text": text, "inputs": inputs, "shape": shape})
        alias[node] = len(nodes) - 1
    return nodes


def _fold(nodes):
    """Draw conv -> BN -> activation as one box: fold a BN or an activation into its only producer."""
    users = {i: [] for i in range(len(nodes))}
    for i, node in enumerate(nodes):
        for j in node["inputs"]:
            users[j].append(i)
    gone = {}
    for i, node in enumerate(nodes):
        if node["kind"] != "act" or len(node["inputs"]) != 1:
            continue
        j = node["inputs"][0]
        while j in gone:
            j = gone[j]
        producer = nodes[j]
        if producer["kind"] in ("conv", "depthwise", "linear", "merge", "pool", "act") and len(users[node["inputs"][0]]) == 1:
            producer["text"] += (" + " if producer["kind"] != "merge" else ", then ") + node["text"]
            producer["shape"] = node["shape"] or producer["shape"]
            gone[i] = j
    kept = [i for i in range(len(nodes)) if i not in gone]
    index = {i: n for n, i in enumerate(kept)}

    def resolve(i):
        while i in gone:
            i = gone[i]
        return index[i]

    return [dict(nodes[i], inputs=sorted({resolve(j) for j in nodes[i]["inputs"]})) for i in kept]


def _layout(nodes):
    """Row = longest path from the input; column: a node's first user stays in its column, others open new ones."""
    rows, cols, next_col = {}, {}, 1
    for i, node in enumerate(nodes):
        rows[i] = 1 + max((rows[j] for j in node["inputs"]), default=-1)
    taken = set()
    for i, node in enumerate(nodes):
        if not node["inputs"]:
            cols[i] = 0
        elif len(node["inputs"]) > 1:
            cols[i] = min(cols[j] for j in node["inputs"])
        else:
            parent = node["inputs"][0]
            if parent not in taken:
                cols[i] = cols[parent]
                taken.add(parent)
            else:
                cols[i], next_col = next_col, next_col + 1
    # a merge is drawn in its lowest column, so the column of a branch that ended there is free again
    return rows, cols


def _shape_text(shape):
    if not shape:
        return ""
    return "×".join(map(str, shape[1:]))


# ------------------------------------------------------------------ drawing

def _box(ax, x, y, text, kind):
    round_ = "round,pad=0.02,rounding_size=0.25" if kind in ("merge", "split", "shuffle", "io") else "round,pad=0.02,rounding_size=0.05"
    ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H, boxstyle=round_,
                                facecolor=COLOURS.get(kind, "#eeeeee"), edgecolor="#444444", linewidth=0.8))
    ax.text(x, y, text, ha="center", va="center", fontsize=7.5, wrap=True)


def _arrow(ax, start, end, rad=0.0, colour="#333333", style="-|>"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=9, color=colour, linewidth=1,
                                 connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0))


def draw_block(ax, module, input_shape, *, wrap=(), title=None):
    """Draw ``module`` (fed a tensor of ``input_shape``) into the matplotlib axes ``ax``; returns the box count."""
    shape = tuple(input_shape)
    if len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be a tuple of positive ints such as (1, 64, 14, 14), not {input_shape!r}")
    nodes = _fold(_graph(module, torch.zeros(shape), wrap))  # zeros: the global random state is left alone
    if len(nodes) > MAX_BOXES:
        raise ValueError(f"{type(module).__name__} has {len(nodes)} layers after folding BN and activations, more than "
                         f"{MAX_BOXES}: draw one of its blocks instead")
    rows, cols = _layout(nodes)
    pos = {i: (cols[i] * DX, -rows[i] * DY) for i in range(len(nodes))}
    occupied = {(cols[i], rows[i]) for i in range(len(nodes))}
    arcs = 0
    for i, node in enumerate(nodes):
        text = node["text"]
        if node["kind"] == "io":
            text = f"{text} {_shape_text(node['shape'])}"
        elif node["kind"] in ("merge",) and node["shape"]:
            text = f"{text} → {_shape_text(node['shape'])}"
        _box(ax, *pos[i], text, node["kind"])
        for j in node["inputs"]:
            (x0, y0), (x1, y1) = pos[j], pos[i]
            between = any((cols[i], r) in occupied for r in range(rows[j] + 1, rows[i]))
            if cols[i] == cols[j] and between:  # a shortcut: an arc to the right of the boxes it skips
                arcs += 1
                side = x0 + BOX_W / 2 + 0.25 * arcs
                ax.plot([x0 + BOX_W / 2, side, side], [y0, y0, y1], color="#b45f06", linewidth=1.2)
                _arrow(ax, (side, y1), (x1 + BOX_W / 2, y1), colour="#b45f06")
                ax.text(side + 0.05, (y0 + y1) / 2, "identity", rotation=90, fontsize=7, color="#b45f06",
                        va="center", ha="left")
            elif x0 == x1:
                _arrow(ax, (x0, y0 - BOX_H / 2), (x1, y1 + BOX_H / 2))
            else:
                _arrow(ax, (x0, y0 - BOX_H / 2), (x1, y1 + BOX_H / 2), rad=0.0)
    width = (max(cols.values()) + 1) * DX + 0.4 * arcs
    ax.set_xlim(-DX / 2, width - DX / 2 + 0.4)
    ax.set_ylim(-max(rows.values()) * DY - DY / 2, DY / 2)
    ax.set_aspect("equal")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return len(nodes)


def block_diagram(module, input_shape, *, wrap=(), title=None):
    """A Figure of ``module``'s data path for an input of ``input_shape`` (batch first, e.g. ``(1, 256, 14, 14)``).

    ``module`` may also be a dict {title: module}: the blocks are drawn side by side, each fed ``input_shape``.
    ``wrap``: plain functions that ``forward`` calls and that should appear as one box (for example a
    ``channel_shuffle`` written with reshapes), rather than the operations inside them.
    Raises TypeError for something that is not an ``nn.Module``; ValueError for a bad ``input_shape``,
    a module ``torch.fx`` cannot trace, or one too large to be a block.
    """
    blocks = module if isinstance(module, dict) else {title or type(module).__name__: module}
    if not blocks:
        raise ValueError("block_diagram needs at least one module")
    fig, _ = _side_by_side(blocks, input_shape, wrap)
    return fig


def _side_by_side(blocks, input_shape, wrap):
    widths = []
    for block in blocks.values():  # a first pass measures each drawing, so that the columns get their widths
        probe = Figure()
        axis = probe.add_subplot()
        draw_block(axis, block, input_shape, wrap=wrap)
        widths.append(axis.get_xlim()[1] - axis.get_xlim()[0])
    fig = Figure(figsize=(1, 1))
    axes = fig.subplots(1, len(blocks), gridspec_kw={"width_ratios": widths}, squeeze=False)[0]
    for ax, (title, block) in zip(axes, blocks.items()):
        draw_block(ax, block, input_shape, wrap=wrap, title=title)
    _fit(fig, list(axes))
    return fig, axes


def _fit(fig, axes):
    """Size the figure so that one unit of the drawing is about the same on every diagram."""
    widths = [ax.get_xlim()[1] - ax.get_xlim()[0] for ax in axes]
    height = max(ax.get_ylim()[1] - ax.get_ylim()[0] for ax in axes)
    fig.set_size_inches(max(3.5, 0.95 * sum(widths) + 1.2 * (len(axes) - 1)), 0.95 * height + 0.6)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92 if height > 3 else 0.85,
                        wspace=0.35 if len(axes) > 1 else 0.2)


def merge_diagram(before, after, input_shape, *, titles=("before", "after"), wrap=(), note="same function"):
    """``before`` and ``after`` (two modules computing the same function) side by side, with an arrow and ``note``."""
    if len(titles) != 2 or titles[0] == titles[1]:
        raise ValueError(f"merge_diagram needs two different titles, not {titles!r}")
    fig, axes = _side_by_side({titles[0]: before, titles[1]: after}, input_shape, wrap)
    for ax in axes:
        ax.apply_aspect()
    middle = (axes[0].get_position().x1 + axes[1].get_position().x0) / 2
    fig.text(middle, 0.5, f"⇒\n{note}", ha="center", va="center", fontsize=9, color="#38761d")
    return fig


class _GroupedFromScratch(nn.Module):
    """What nn.Conv2d(groups=g) computes, as separate layers: split -> g ordinary convs -> concat."""

    def __init__(self, conv):
        super().__init__()
        a, b = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        self.groups = conv.groups
        self.convs = nn.ModuleList(nn.Conv2d(a, b, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                                             bias=conv.bias is not None) for _ in range(conv.groups))

    def forward(self, x):
        parts = x.chunk(self.groups, dim=1)  # indexed, not unpacked: fx knows the count only as self.groups
        return torch.cat([conv(parts[j]) for j, conv in enumerate(self.convs)], dim=1)


def grouped_conv_diagram(conv, input_shape, *, max_groups=8):
    """``conv`` (an ``nn.Conv2d`` with ``groups=g``) drawn as split into g groups, g ordinary convs, concat."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"grouped_conv_diagram draws an nn.Conv2d, not {type(conv).__name__}")
    if conv.groups > max_groups:
        raise ValueError(f"{conv.groups} groups would be {conv.groups} columns; draw one with at most {max_groups} groups")
    unrolled = _GroupedFromScratch(conv)
    return merge_diagram(conv, unrolled, input_shape,
                         titles=(f"nn.Conv2d(groups={conv.groups}): one layer", "what it computes"),
                         note="the same\nweights")


def shuffle_diagram(channels, groups):
    """Each channel's place before and after ``nn.ChannelShuffle(groups)``, coloured by its group."""
    if not (isinstance(channels, int) and isinstance(groups, int)) or channels < 1 or groups < 1 or channels % groups:
        raise ValueError(f"groups must divide channels (both positive ints); got channels={channels!r}, groups={groups!r}")
    if channels > 48:
        raise ValueError(f"{channels} channels are too many to draw one by one; use at most 48")
    order = nn.ChannelShuffle(groups)(torch.arange(channels, dtype=torch.float).view(1, channels, 1, 1))
    order = order.flatten().long().tolist()  # order[p] = the channel now at position p
    n = channels // groups
    fig = Figure(figsize=(max(4.0, 0.32 * channels + 1.2), 2.6))
    ax = fig.add_subplot()
    colours = [f"C{c // n % 10}" for c in range(channels)]
    for p, c in enumerate(order):
        ax.plot([c, p], [1, 0], color=colours[c], linewidth=1.2, alpha=0.8)
    for y, channel_at in ((1, list(range(channels))), (0, order)):
        for p, c in enumerate(channel_at):
            ax.add_patch(FancyBboxPatch((p - 0.4, y - 0.12), 0.8, 0.24, boxstyle="round,pad=0.01",
                                        facecolor=colours[c], edgecolor="#333333", linewidth=0.5))
            ax.text(p, y, str(c), ha="center", va="center", fontsize=6.5, color="white")
    for j in range(groups):
        ax.text((j + 0.5) * n - 0.5, 1.25, f"group {j}", ha="center", fontsize=7)
        ax.text((j + 0.5) * n - 0.5, -0.3, f"next layer's group {j}", ha="center", fontsize=7)
        if j:
            for y in (0, 1):
                ax.plot([j * n - 0.5] * 2, [y - 0.18, y + 0.18], color="black", linewidth=1.5)
    ax.text(-0.8, 1, "before", ha="right", va="center", fontsize=8)
    ax.text(-0.8, 0, "after", ha="right", va="center", fontsize=8)
    ax.set_xlim(-2.5, channels)
    ax.set_ylim(-0.45, 1.4)
    ax.set_axis_off()
    ax.set_title(f"channel shuffle: {channels} channels, {groups} groups (nn.ChannelShuffle({groups}))", fontsize=9)
    return fig


def kv_cache_diagram(cached, new=1):
    """One layer's key-value cache while generating: ``cached`` positions kept from earlier steps (grey), ``new``
    positions computed now (green) and appended, and the new positions' queries reading every key up to their own."""
    if not (isinstance(cached, int) and isinstance(new, int)) or cached < 0 or new < 1 or cached + new > 24:
        raise ValueError(f"need 0 <= cached and 1 <= new with cached + new <= 24 (to draw them one by one); "
                         f"got cached={cached!r}, new={new!r}")
    total = cached + new
    fig = Figure(figsize=(0.42 * total + 4.8, 2.9))
    ax = fig.add_subplot()
    rows = {"keys K": 1.0, "values V": 0.0}
    for label, y in rows.items():
        ax.text(-0.8, y, label, ha="right", va="center", fontsize=8)
        for p in range(total):
            colour = "#d9ead3" if p >= cached else "#eeeeee"
            ax.add_patch(FancyBboxPatch((p - 0.4, y - 0.15), 0.8, 0.3, boxstyle="round,pad=0.01",
                                        facecolor=colour, edgecolor="#333333", linewidth=0.6))
            ax.text(p, y, str(p), ha="center", va="center", fontsize=6.5)
    for i in range(new):  # each new query sees the keys of its own position and every earlier one
        q = cached + i
        ax.add_patch(FancyBboxPatch((q - 0.4, 1.85), 0.8, 0.3, boxstyle="round,pad=0.01", facecolor="#fce5cd",
                                    edgecolor="#333333", linewidth=0.6))
        ax.text(q, 2.0, f"q{q}", ha="center", va="center", fontsize=6.5)
        for p in range(q + 1):
            ax.plot([q, p], [1.85, 1.15], color="#b45f06", linewidth=0.6, alpha=0.6)
    ax.text(total + 0.1, 2.0, "queries of the new\npositions: not kept", ha="left", va="center", fontsize=7)
    ax.text(total + 0.1, 0.5, f"{cached} kept from earlier steps (grey),\n{new} computed now and appended (green)",
            ha="left", va="center", fontsize=7)
    ax.set_xlim(-2.2, total + 6.5)
    ax.set_ylim(-0.4, 2.4)
    ax.set_axis_off()
    ax.set_title("the KV cache of one layer and one head: read in full, only the new positions computed", fontsize=8)
    return fig


def pipeline_diagram(steps, ratios, *, title="the pipeline"):
    """Boxes for ``steps`` (names, in order) joined by arrows, each with its ``ratios`` beneath.

    ``ratios``: {step: {label: value}}, e.g. measured "x smaller file" and "x faster" per step; a
    missing step or label is left blank. Raises ValueError for no steps or a ratio of an unknown step.
    """
    steps = list(steps)
    if not steps:
        raise ValueError("pipeline_diagram needs at least one step")
    unknown = set(ratios) - set(steps)
    if unknown:
        raise ValueError(f"ratios given for steps not in the pipeline: {sorted(unknown)}")
    fig = Figure(figsize=(max(4.0, 1.9 * len(steps)), 1.9))
    ax = fig.add_subplot()
    width, gap = 1.5, 0.4
    for i, step in enumerate(steps):
        x = i * (width + gap)
        ax.add_patch(FancyBboxPatch((x, 0.55), width, 0.45, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor="#cfe2f3" if i else "#ffffff", edgecolor="#444444", linewidth=0.8))
        ax.text(x + width / 2, 0.775, step, ha="center", va="center", fontsize=7.5)
        lines = [f"{label} {value:.2f}" if isinstance(value, float) else f"{label} {value}"
                 for label, value in ratios.get(step, {}).items()]
        ax.text(x + width / 2, 0.45, "\n".join(lines), ha="center", va="top", fontsize=6.8, color="#38406b")
        if i:
            _arrow(ax, (x - gap, 0.775), (x, 0.775))
    ax.set_xlim(-0.1, len(steps) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.35, 1.1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return fig
