"""Measuring a model: parameters, MACs and FLOPs, file size, latency and time per layer.

Units, used the same way everywhere in the course:

* **MAC** = one multiply-accumulate, ``a += w * x``. **1 MAC = 2 FLOPs** (a multiply and an add).
* :func:`count_macs` is thop's count: the MACs of conv and linear layers (bias additions not
  counted) plus thop's estimate of the other layers' work (4 per element for BatchNorm with its
  scale and shift, about 1 for average pooling, 0 for ReLU and max pooling).
* :func:`count_flops` is PyTorch's own count (``torch.utils.flop_counter``): only matrix work
  (convolutions, matrix products, attention), 2 FLOPs per MAC, nothing for BN, pooling or ReLU.

Both run the model once on the example input and cross-check each other: if thop counts fewer
MACs than the matrix work PyTorch saw (thop misses ``F.conv2d`` called inside ``forward``, for
example), a warning gives both numbers. :func:`conv_macs` gives a convolution's count from the
formula alone, and :func:`layer_calls` lists the layer calls of one forward pass.

Latency is measured under ``torch.inference_mode`` with a fixed thread count, after warm-up
calls, as the median of many calls with the spread (inter-quartile range) beside it (:func:`median_iqr`);
:func:`compare` interleaves the models so that a noisy neighbour slows all of them alike.
:func:`try_compile` gives a ``torch.compile``'d model to time beside the others, where this
machine can compile one.
"""
import contextlib
import copy
import io
import statistics
import time
import warnings
from dataclasses import dataclass

import pandas as pd
import thop
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .plots import compare_bars, show


# ---------------------------------------------------------------- input checks

def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"expected a torch.nn.Module, got {type(model).__name__}. Pass the model itself "
            "(e.g. count_params(net)), not its output, its state_dict or its class."
        )


def _check_inputs(inputs, what):
    if not inputs:
        raise ValueError(
            f"{what} runs the model once and needs an example input, "
            f"e.g. {what}(model, torch.randn(1, 1, 28, 28))."
        )
    for x in inputs:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what}: example inputs must be tensors, got {type(x).__name__}.")


def _shapes(inputs):
    return ", ".join("x".join(map(str, x.shape)) for x in inputs)


def _tensors(model):
    return [*model.parameters(), *model.buffers()]


def _check_placement(model, inputs, what):
    """A model and its inputs on different devices get their own clear error (a mismatch of number types is
    named by :func:`_run_errors` when the forward pass fails: a model may convert its input itself).

    The course's rule: models live on the CPU, where it measures them; the training loops (``fit``,
    ``evaluate``, ``distill``) borrow the GPU when there is one and give the model back where it was.
    """
    if not isinstance(model, nn.Module):
        return  # a plain function: nothing to compare
    devices = {t.device for t in _tensors(model)}
    for x in inputs:
        if devices and x.device not in devices:
            where = ", ".join(sorted(map(str, devices)))
            raise ValueError(
                f"{what}: the model is on {where} but the input is on {x.device}. Put them on one device, "
                f"e.g. model.cpu() (the course measures on the CPU) or x.to('{where}')."
            )


@contextlib.contextmanager
def _run_errors(inputs, what):
    """Turn the deep stack trace of a failed forward pass into one clear message that names its real cause."""
    try:
        yield
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0]
        lowered = first_line.lower()
        if "device" in lowered:
            raise ValueError(f"{what}: some tensors are on different devices: {first_line}\n"
                             "Put the model and its inputs on one device (model.cpu() and CPU inputs, "
                             "or both on the GPU).") from None
        if "dtype" in lowered or "scalar type" in lowered or "input type" in lowered:
            raise ValueError(f"{what}: the model and its input have different number types: {first_line}\n"
                             "Convert one to match (e.g. model.float() and a float32 input).") from None
        raise ValueError(
            f"{what}: the model cannot run on an input of shape {_shapes(inputs)}: {first_line}\n"
            "Check the batch dimension, the channels and the image size the model expects "
            "(1x28x28 for Fashion-MNIST, 3x224x224 for the torchvision ImageNet models)."
        ) from None


@contextlib.contextmanager
def _eval_mode(model):
    """Put every module in eval mode, and afterwards give each its own mode back."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


@contextlib.contextmanager
def num_threads(threads):
    """Run the block with a fixed number of PyTorch CPU threads, then restore the old count."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------- counting

def count_params(model, trainable_only=False):
    """Number of parameters (weights and biases; buffers such as BN running means are not included)."""
    _check_model(model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# PyTorch's counter knows the GPU kernels of scaled dot-product attention but not the CPU one
# (F.scaled_dot_product_attention on the CPU runs this op): without this entry attention counts 0 there.
_EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}


@contextlib.contextmanager
def _attention_unfused():
    """Turn off the fused "fast path" of nn.MultiheadAttention and nn.TransformerEncoder(Layer) while counting.

    In eval mode without gradients they run one fused kernel (``_native_multi_head_attention``) that
    neither counter sees, so attention would silently count 0 MACs. The unfused path does the same
    arithmetic through matrix products and attention ops that both counters know.
    """
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _count(model, inputs, what):
    """(thop MACs, PyTorch FLOPs) for one forward pass, cross-checked."""
    _check_model(model)
    _check_inputs(inputs, what)
    # thop attaches hooks and counters to the model it profiles: give it a copy, never the reader's model.
    clone = copy.deepcopy(model).eval()
    _check_placement(clone, inputs, what)
    with _run_errors(inputs, what), _attention_unfused():
        macs, _ = thop.profile(clone, inputs=tuple(inputs), verbose=False)
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS) as counter, torch.no_grad():
            clone(*inputs)
    macs, flops = int(macs), int(counter.get_total_flops())
    if macs < flops // 2:
        warnings.warn(
            f"thop counted {macs:,} MACs but PyTorch's counter saw {flops // 2:,} MACs of matrix work "
            "alone: thop misses work done by functional calls (F.conv2d, ...) or layers it does not "
            "know. Trust count_flops() for this model.",
            stacklevel=3,
        )
    return macs, flops


def count_macs(model, *inputs):
    """MACs of one forward pass on ``inputs``, counted by thop on a copy of the model.

    Conv and linear layers count ``output elements x (in_channels / groups) x kernel area`` MACs
    (no bias additions); thop adds its estimate for BN and pooling. 1 MAC = 2 FLOPs.
    """
    return _count(model, inputs, "count_macs")[0]


def count_flops(model, *inputs):
    """FLOPs of one forward pass, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Only matrix work is counted (conv, matmul, attention), at 2 FLOPs per MAC; BN, pooling and
    activations count 0. So ``count_flops`` can be a little less than ``2 * count_macs``.
    """
    return _count(model, inputs, "count_flops")[1]


def _whole_numbers(shape, what):
    try:
        values = tuple(shape)
    except TypeError:
        values = None
    if values is None or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ValueError(f"{what} must be a tuple of whole numbers such as (1, 3, 224, 224), got {shape!r}")
    return values


def conv_macs(conv, input_shape):
    """MACs of the convolution ``conv`` (an ``nn.Conv2d``) on an input of shape ``(N, C, H, W)``, from the
    formula alone, without running the layer: the count :func:`count_macs` gives for it.

    Every output value is a dot product of ``(C_in / groups) * k_h * k_w`` terms (the bias addition is not
    counted), and there are ``N * C_out * H_out * W_out`` output values, with, along each axis (PyTorch's
    ``Conv2d`` documentation), ``out = floor((n + 2 * padding - dilation * (k - 1) - 1) / stride) + 1``.

    Raises TypeError if ``conv`` is not an ``nn.Conv2d``, and ValueError if ``input_shape`` is not four whole
    numbers, if its ``C`` is not ``conv.in_channels``, or if the input is too small for the (dilated) kernel.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv_macs expects an nn.Conv2d, got {type(conv).__name__}")
    shape = _whole_numbers(input_shape, "input_shape")
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be (N, C, H, W), four whole numbers >= 1, got {tuple(input_shape)}")
    n, c, *size = shape
    if c != conv.in_channels:
        raise ValueError(f"the input has {c} channels but the convolution expects {conv.in_channels}")
    out = []
    for axis in range(2):
        k, s, d = conv.kernel_size[axis], conv.stride[axis], conv.dilation[axis]
        if conv.padding == "same":  # PyTorch pads (unevenly, if it must) so that the size is kept
            out.append(size[axis])
            continue
        p = 0 if conv.padding == "valid" else conv.padding[axis]
        length = (size[axis] + 2 * p - d * (k - 1) - 1) // s + 1
        if length < 1:
            raise ValueError(f"an input of size {size[0]}x{size[1]} is too small for this kernel: it spans "
                             f"{d * (k - 1) + 1} pixels (dilation {d}) with padding {p}, so there is no output")
        out.append(length)
    return n * conv.out_channels * out[0] * out[1] * (conv.in_channels // conv.groups) * conv.kernel_size[0] * conv.kernel_size[1]


def model_size(model):
    """Bytes of the model's ``state_dict`` as ``torch.save`` writes it (what a file on disk would take).

    A model that knows the size of its own file (``file_bytes()``, e.g. a frozen TorchScript model
    from ``helpers.compress.freeze``) reports that instead.
    """
    _check_model(model)
    if hasattr(model, "file_bytes"):
        return model.file_bytes()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


# ---------------------------------------------------------------- timing

def _format_seconds(s):
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def median_iqr(times):
    """``(median, inter-quartile range)`` of a list of durations: the summary :class:`Timing` reports.

    The median is the middle value (the mean of the two middle ones for an even count); the quartiles
    ``q1`` and ``q3`` are those of ``statistics.quantiles(times, n=4)`` (its default, "exclusive" method:
    numpy's ``percentile`` interpolates differently), and the spread is ``q3 - q1``. One duration has no
    spread (0.0). Raises ValueError for an empty list or a negative duration.
    """
    times = list(times)
    if not times:
        raise ValueError("median_iqr needs at least one duration, got an empty list")
    if any(t < 0 for t in times):
        raise ValueError(f"a duration cannot be negative, got {min(times)}")
    if len(times) < 2:
        return statistics.median(times), 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return statistics.median(times), q3 - q1


@dataclass
class Timing:
    """Latencies of repeated calls, in seconds. ``median`` and ``iqr`` (the spread) summarise them."""

    times: list
    threads: int

    @property
    def median(self):
        return median_iqr(self.times)[0]

    @property
    def iqr(self):
        """Inter-quartile range: the middle half of the calls took between q1 and q3 (:func:`median_iqr`)."""
        return median_iqr(self.times)[1]

    def __repr__(self):
        return (
            f"{_format_seconds(self.median)} ± {_format_seconds(self.iqr / 2)} "
            f"(median ± half the IQR of {len(self.times)} calls, {self.threads} thread"
            f"{'s' if self.threads > 1 else ''})"
        )


def _sync(inputs):
    if any(x.is_cuda for x in inputs):
        torch.cuda.synchronize()


def _time_interleaved(models, inputs, threads, warmup, repeat, what="benchmark"):
    """Call every model ``repeat`` times, taking turns, and return each one's list of latencies.

    A model may also be a plain function of the inputs (layer_times times a hooked pass that way).
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a whole number >= 0, got {warmup!r}")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a whole number >= 1, got {repeat!r}")
    for model in models.values():
        _check_placement(model, inputs, what)
    names = list(models)
    times = {name: [] for name in names}
    with num_threads(threads), contextlib.ExitStack() as stack, torch.inference_mode():
        for model in models.values():
            if isinstance(model, nn.Module):
                stack.enter_context(_eval_mode(model))
        with _run_errors(inputs, what):
            for _ in range(max(warmup, 1)):  # at least one call: first-call costs never count
                for model in models.values():
                    model(*inputs)
        _sync(inputs)
        for r in range(repeat):
            # alternate the order so that no model always runs right after the same neighbour
            for name in names if r % 2 == 0 else reversed(names):
                start = time.perf_counter()
                models[name](*inputs)
                _sync(inputs)
                times[name].append(time.perf_counter() - start)
    return times


def benchmark(model, *inputs, threads=1, warmup=3, repeat=20):
    """Latency of ``model(*inputs)``: warm-up calls, then ``repeat`` timed calls on ``threads`` threads.

    Returns a :class:`Timing` (``.median``, ``.iqr``, ``.times`` in seconds). The model runs in eval
    mode under ``torch.inference_mode`` and is given its own mode back afterwards. One thread is the
    default because it is the most repeatable figure on a shared machine; pass ``threads=os.cpu_count()``
    to see what all cores do.
    """
    _check_model(model)
    _check_inputs(inputs, "benchmark")
    return Timing(_time_interleaved({"model": model}, inputs, threads, warmup, repeat)["model"], threads)


def time_models(models, *inputs, threads=1, warmup=3, repeat=20):
    """Median latency (and spread) of several models or functions on the same input, interleaved.

    ``models`` maps a name to a model or to any function of the inputs (a sparse matrix product,
    say), so that things which are not ``nn.Module``s can be raced too. Returns a table with
    ``latency_ms``, ``spread_ms`` (inter-quartile range) and ``speedup`` relative to the first entry.
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("time_models expects a dict of {name: model or function}, "
                        "e.g. time_models({'dense': a, 'sparse': b}, x)")
    for model in models.values():
        if not callable(model):
            _check_model(model)
    _check_inputs(inputs, "time_models")
    times = _time_interleaved(models, inputs, threads, warmup, repeat, "time_models")
    rows = {}
    for name in models:
        timing = Timing(times[name], threads)
        rows[name] = {"latency_ms": timing.median * 1e3, "spread_ms": timing.iqr * 1e3}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["speedup"] = table["latency_ms"].iloc[0] / table["latency_ms"]
    table.attrs["threads"] = threads
    table.attrs["batch"] = inputs[0].shape[0] if inputs[0].dim() else 1
    return table


def compare(models, *inputs, threads=1, warmup=3, repeat=20, plot=False):
    """Params, MACs, file size and latency of several models on the same input, as a table.

    ``models`` maps a name to a model. Latencies are measured interleaved in one run
    (:func:`time_models`), so their ratios are fair even on a noisy machine; ``speedup`` is
    relative to the first model. With ``plot=True`` the table is also drawn and displayed
    (:func:`helpers.plots.compare_bars`).
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("compare expects a dict of {name: model}, e.g. compare({'big': a, 'small': b}, x)")
    for model in models.values():
        _check_model(model)
    _check_inputs(inputs, "compare")
    times = time_models(models, *inputs, threads=threads, warmup=warmup, repeat=repeat)
    counts = pd.DataFrame.from_dict({name: {"params": count_params(model), "MACs": count_macs(model, *inputs),
                                            "size_MB": model_size(model) / 1e6}
                                     for name, model in models.items()}, orient="index")
    table = counts.join(times)
    table.attrs.update(times.attrs)
    if plot:
        show(compare_bars(table))
    return table


# ---------------------------------------------------------------- time per layer type

LAYER_KINDS = {
    "conv": (nn.modules.conv._ConvNd,),
    "linear": (nn.Linear, nn.Bilinear),
    "bn": (nn.modules.batchnorm._NormBase,),  # BatchNorm and InstanceNorm
    "pool": (
        nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    ),
    "activation": (
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
        nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softmax,
    ),
}
TENSOR_KINDS = ("conv", "linear")  # the layers that hold the weights and do the multiply-adds


def layer_kind(module):
    """'conv', 'linear', 'bn', 'pool', 'activation' or 'other'."""
    for kind, types in LAYER_KINDS.items():
        if isinstance(module, types):
            return kind
    return "other"


def _values(output):
    """Number of values in a layer's output (a tensor, or tensors in a tuple or list)."""
    if isinstance(output, torch.Tensor):
        return output.numel()
    if isinstance(output, (tuple, list)):
        return sum(_values(o) for o in output)
    return 0


def layer_calls(model, *inputs):
    """Every call of a leaf module (a module without sub-modules) in one forward pass, in order.

    Returns a list of ``(module, number of values it wrote)``; a module called three times appears
    three times (a ResNet bottleneck calls its one ReLU module three times). A forward hook on each
    leaf appends to the list; the hooks are removed afterwards, even if the pass fails. The pass runs
    under ``torch.no_grad()`` in eval mode (each module gets its own mode back), so that BatchNorm's
    statistics are not changed. Raises TypeError if ``model`` is not an ``nn.Module``, ValueError
    without an example input.
    """
    _check_model(model)
    _check_inputs(inputs, "layer_calls")
    calls = []
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda module, args, output: calls.append((module, _values(output))))
               for m in leaves]
    try:
        with _eval_mode(model), torch.no_grad(), _run_errors(inputs, "layer_calls"):
            _check_placement(model, inputs, "layer_calls")
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def layer_times(model, *inputs, threads=1, warmup=3, repeat=20):
    """Time spent per layer type in one forward pass, from hooks on every leaf module.

    Returns a table indexed by kind (conv, linear, bn, pool, activation, other) with the median
    milliseconds per pass, the share of the whole pass, and ``work``: "tensor" for conv and linear
    layers, "non-tensor" for the rest. Time outside any leaf module (``torch.flatten`` or a residual
    ``+`` written in ``forward``, and the hooks' own small overhead) is counted as "other".
    """
    _check_model(model)
    _check_inputs(inputs, "layer_times")
    leaves = [m for m in model.modules() if not list(m.children())]
    starts, spent, per_pass = {}, {}, []

    def before(module, args):
        starts[module] = time.perf_counter()

    def after(module, args, output):
        spent[module] = spent.get(module, 0.0) + time.perf_counter() - starts[module]

    def one_pass(*args):
        """One timed forward pass; keeps the seconds per kind, with the rest of the pass as "other"."""
        spent.clear()
        start = time.perf_counter()
        model(*args)
        _sync(args)
        total = time.perf_counter() - start
        kinds = dict.fromkeys([*LAYER_KINDS, "other"], 0.0)
        for module, seconds in spent.items():
            kinds[layer_kind(module)] += seconds
        kinds["other"] += total - sum(spent.values())
        per_pass.append(kinds)

    handles = [h for m in leaves for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    try:
        # _time_interleaved does the warm-up, threads and inference mode; one_pass keeps the split.
        with _eval_mode(model):
            _check_placement(model, inputs, "layer_times")
            _time_interleaved({"pass": one_pass}, inputs, threads, warmup, repeat, "layer_times")
    finally:
        for h in handles:
            h.remove()
    per_pass = per_pass[max(warmup, 1):]  # drop the warm-up passes
    ms = {kind: statistics.median(p[kind] for p in per_pass) * 1e3 for kind in per_pass[0]}
    table = pd.DataFrame({"ms": ms})
    table["share"] = table["ms"] / table["ms"].sum()
    table["work"] = ["tensor" if kind in TENSOR_KINDS else "non-tensor" for kind in table.index]
    return table


def try_compile(model, *example_inputs):
    """``torch.compile(model)`` after one trial call on ``example_inputs``, or None (saying why) where
    this machine cannot compile: Inductor builds its CPU kernels with a C++ compiler (g++ or clang)."""
    _check_model(model)
    compiled = torch.compile(model)
    try:
        with torch.inference_mode():
            compiled(*example_inputs)
        return compiled
    except Exception as error:  # usually: no C++ compiler for Inductor's kernels
        print(f"torch.compile failed here ({type(error).__name__}: {str(error)[:200]}); the compiled rows are "
              "left out. Inductor needs a C++ compiler (g++ or clang) to build its CPU kernels.")
        return None
