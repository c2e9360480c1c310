"""Deployment (notebook 14): a model taken out of PyTorch and run by an inference runtime.

* Export. :func:`export_program` captures a model as a graph with ``torch.export`` and, when it
  cannot, raises :class:`ExportError` naming the operator and the line of ``forward`` that stopped
  it; :func:`export_onnx` writes that graph as an ONNX file (``torch.onnx.export``, the dynamo
  exporter), checked by ``onnx.checker``; :func:`onnx_ops` lists the file's operators.
* ONNX Runtime. :func:`onnxruntime_model` opens a file in an ``InferenceSession`` with a fixed number
  of threads and a graph optimization level; :func:`quantize_dynamic_onnx` and
  :func:`quantize_static_onnx` write its two int8 forms (weights only, activations quantized on the
  fly; or static QDQ, activations' ranges from a :class:`CalibrationImages` reader).
* OpenVINO, the second runtime. :func:`openvino_model` compiles the same ONNX file (or an IR
  ``.xml``) for the CPU; :func:`openvino_int8` quantizes it with NNCF.
* Every runtime's model is a :class:`Deployed`: an ``nn.Module`` that takes and returns torch
  tensors, so ``evaluate``, ``time_models`` and ``model_size`` (its files) work on it unchanged.
  :func:`agreement` is the share of inputs on which two models predict the same class.
* :func:`serve_stats` loads a file in a fresh process that imports only its runtime, serves a few
  calls and reports load time and memory (resident set size).
* The smallest file: :func:`kmeans_codebook` (4-bit weight sharing, as Deep Compression),
  :func:`share_weights` (every layer's weight made of shared values that can be fine-tuned, Deep Compression's
  trained quantization), :func:`pack_nibbles` / :func:`unpack_nibbles` (two 4-bit codes per byte), :func:`save_packed` and
  :func:`load_packed` (a chain of layers in one small file, optionally compressed by LZMA as the
  entropy-coding stage). :func:`compressed_model` keeps ``make bench``'s compressed nets this way.
"""
import contextlib
import copy
import io
import json
import logging
import lzma
import os
import re
import struct
import subprocess
import sys
import sysconfig
import tempfile
import traceback
import warnings
from unittest import mock
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import Dataset

from .env import DATA_DIR, FAST, atomic_file

INPUT, OUTPUT = "image", "logits"  # the names of the exported graph's input and output


# ---------------------------------------------------------------- export

class ExportError(RuntimeError):
    """A model that ``torch.export`` (or the ONNX exporter after it) cannot capture; the message names
    the operator and, when it is found, the line of the model's code that stopped the capture."""


_DATA_DEPENDENT = ("GuardOnDataDependentSymNode", "data-dependent", "Could not guard")
_OPERATOR = re.compile(r"torch\.classes\.(\w+)\.(\w+)|\b((?:aten|quantized|prim)(?:::|\.)\w+(?:\.\w+)?)")


def _user_line(error):
    """'file:line: code' of the innermost frame of the traceback outside torch and this module, or ''."""
    library = sysconfig.get_paths()["stdlib"]
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "/torch/" not in f.filename and "site-packages" not in f.filename
              and not f.filename.startswith(library) and not f.filename.endswith(os.path.join("helpers", "deploy.py"))]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} (`{(frame.line or '').strip()}`)"


def _explain(error, what):
    """One clear sentence for an export failure: which operator, where, and what to do."""
    text = f"{type(error).__name__}: {error}"
    where = _user_line(error)
    if any(mark in text for mark in _DATA_DEPENDENT):
        return (f"{what} cannot capture the model: a Python `if` (or bool(), int(), .item()) on a tensor's value "
                f"needs the operator aten.item, whose result is unknown while tracing (data-dependent control flow)"
                f"{where}. Compute both branches and pick with torch.where, or use torch.cond.")
    found = _OPERATOR.search(text)
    if found:
        operator = f"{found.group(1)}.{found.group(2)}" if found.group(1) else found.group(3)
        advice = ("PyTorch's eager int8 modules (torch.ao) hold packed weights that torch.export cannot "
                  "capture: export the fp32 model and quantize it in the runtime"
                  if "quantized" in operator.lower() or "PackedParams" in operator else
                  "rewrite that part with operators the exporter knows, or register a translation for it")
        return f"{what} cannot capture the model: operator {operator}{where}. {advice}."
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{what} cannot capture the model ({type(error).__name__}: {first[:300]}){where}."


@contextlib.contextmanager
def _quiet():
    """Keep the exporters' progress lines and their logged graphs out of the reader's output."""
    loggers = [logging.getLogger(name) for name in ("torch.fx.experimental.symbolic_shapes", "torch._dynamo",
                                                    "torch.export", "torch._export", "torch.onnx")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _check_example(model, example, what):
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"{what} needs an example input tensor, such as torch.randn(1, 1, 28, 28); "
                        f"got {type(example).__name__}")


def export_program(model, example, *, dynamic_batch=False):
    """``torch.export.export(model, (example,))``: the model's forward pass captured as a graph of ATen operators.

    With ``dynamic_batch`` the batch size (dimension 0) is a symbol, so the graph runs at any batch (an
    example batch of 1 is traced as 2 copies: torch.export takes a size of 1 for a constant).
    The model is captured in eval mode (and given its own mode back). Raises TypeError for a model that
    is not an ``nn.Module`` or an example that is not a tensor, and :class:`ExportError`, naming the
    operator and the line of ``forward``, for a model the capture cannot follow.
    """
    _check_example(model, example, "export_program")
    shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
    if dynamic_batch and example.shape[0] == 1:  # a batch of 1 would be taken for a constant: trace with 2
        example = torch.cat([example, example])
    was_training = model.training
    model.eval()
    try:
        with _quiet():
            return torch.export.export(model, (example,), dynamic_shapes=shapes)
    except Exception as error:  # noqa: BLE001 -- every failure becomes one clear sentence
        raise ExportError(_explain(error, "torch.export")) from None
    finally:
        model.train(was_training)


def export_onnx(model, path, example, *, dynamic_batch=True):
    """Write ``model`` as an ONNX file at ``path`` and return the path.

    The model is captured by :func:`export_program`, translated by ``torch.onnx.export`` (the dynamo
    exporter, which also runs its graph optimizer), written atomically and checked with
    ``onnx.checker.check_model(full_check=True)``. The graph's input is named ``"image"`` and its output
    ``"logits"``; with ``dynamic_batch`` (the default) it takes any batch size.
    Raises :class:`ExportError` naming the operator when the model cannot be captured or translated.
    """
    import onnx

    program = export_program(model, example, dynamic_batch=dynamic_batch)
    path = Path(path)
    try:
        with _quiet():
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, verbose=False,
                                             input_names=[INPUT], output_names=[OUTPUT])
    except Exception as error:  # noqa: BLE001
        raise ExportError(_explain(error, "torch.onnx.export")) from None
    with atomic_file(path) as file:
        file.write(onnx_program.model_proto.SerializeToString())
    onnx.checker.check_model(str(path), full_check=True)
    return path


def onnx_ops(path):
    """The operator types of an ONNX file's graph, counted, in the order they first appear."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return Counter(node.op_type for node in graph.node)


# ---------------------------------------------------------------- a model served by a runtime

class Deployed(nn.Module):
    """A model run by an inference runtime, used like a PyTorch model: a float32 image batch (or a long tensor of
    tokens) in, logits out.

    ``run`` maps a NumPy array to a NumPy array (the runtime's call); ``files`` are the files it was loaded
    from, whose sizes :meth:`file_bytes` adds up (``helpers.model_size`` uses it). It has no parameters:
    its weights live in the runtime, on the CPU.
    """

    def __init__(self, run, files, label, runtime):
        super().__init__()
        self._run = run
        self.files = [Path(f) for f in files]
        self.label, self.runtime = label, runtime

    def forward(self, x):
        dtype = np.float32 if torch.is_floating_point(x) else np.int64  # images, or a language model's tokens
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=dtype)
        return torch.from_numpy(np.asarray(self._run(array)))

    def file_bytes(self):
        return sum(f.stat().st_size for f in self.files)

    def extra_repr(self):
        return f"{self.label}: {', '.join(f.name for f in self.files)}"


def _check_file(path, suffixes):
    path = Path(path)
    if path.suffix not in suffixes:
        raise ValueError(f"expected a {' or '.join(suffixes)} file, got {path.name!r}")
    if not path.exists():
        raise FileNotFoundError(f"no model file {path}")
    return path


def _check_threads(threads):
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")


LEVELS = ("disable", "basic", "extended", "all")  # ONNX Runtime's graph optimization levels, in order


def ort_options(threads=1, level="all", optimized_path=None):
    """ONNX Runtime session options: ``threads`` for the operators (one stream of calls, no thread left
    spinning between calls, so that interleaved timings stay fair) and a graph optimization level:

    * ``"disable"``: the graph as exported;
    * ``"basic"``: constant folding, redundant nodes removed, Conv + BatchNormalization and other simple
      fusions (these keep the graph runnable by any execution provider);
    * ``"extended"``: bigger fusions (GELU, attention, layer norm ...) for the CPU and CUDA providers;
    * ``"all"``: as extended, plus layout changes (NCHWc blocked tensors for the CPU's vector units).

    ``optimized_path``: where to write the graph after optimization, to look at it.
    """
    import onnxruntime as ort

    _check_threads(threads)
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def onnxruntime_model(path, *, threads=1, level="all", label=None):
    """An ONNX file run by ONNX Runtime on the CPU, as a :class:`Deployed` model (see :func:`ort_options`)."""
    import onnxruntime as ort

    path = _check_file(path, (".onnx",))
    session = ort.InferenceSession(str(path), ort_options(threads, level), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return Deployed(lambda x: session.run(None, {name: x})[0], [path], label or f"ONNX Runtime ({path.stem})",
                    "onnxruntime")


def openvino_model(path, *, threads=1, label=None):
    """An ONNX file or an OpenVINO IR (``.xml`` beside its ``.bin``) compiled by OpenVINO for the CPU.

    fp32 stays fp32: OpenVINO would otherwise compute in bf16 on CPUs that have it (the precision hint
    is set to f32; int8 layers of a quantized model stay int8). One inference request, ``threads`` threads.
    """
    import openvino as ov

    path = _check_file(path, (".onnx", ".xml"))
    _check_threads(threads)
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return Deployed(lambda x: request.infer([x])[0], files, label or f"OpenVINO ({path.stem})", "openvino")


# ---------------------------------------------------------------- int8 in the runtimes

def calibration_batch(data, input_name, batch, batch_size):
    """Batch number ``batch`` (from 0) of ``data`` (a Dataset of (image, label) pairs) as ONNX Runtime takes an
    input: ``{input_name: float32 NumPy array [B, C, H, W]}`` holding images ``batch * batch_size`` up to the
    next ``batch_size`` (fewer at the end of the data); ``None`` when the batch starts beyond the data.
    Raises ValueError unless ``batch`` is a whole number >= 0 and ``batch_size`` one >= 1."""
    for name, value, least in (("batch", batch, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
    start = batch * batch_size
    if start >= len(data):
        return None
    images = torch.stack([data[i][0] for i in range(start, min(start + batch_size, len(data)))])
    return {input_name: images.numpy().astype(np.float32)}


class CalibrationImages:
    """ONNX Runtime's calibration data reader for image classifiers: each ``get_next()`` gives the next batch,
    ``{input_name: float32 array [B, C, H, W]}`` (``batch_fn``, :func:`calibration_batch` by default), for
    the first ``batches`` batches of ``batch_size`` images of ``data`` (fewer when the data ends first),
    then ``None`` for ever. ``rewind()`` starts again. Raises TypeError for data that is not a non-empty
    Dataset, ValueError when ``batches`` or ``batch_size`` is not a whole number >= 1.
    """

    def __init__(self, data, input_name=INPUT, batches=8, batch_size=32, batch_fn=calibration_batch):
        if not isinstance(data, Dataset) or len(data) == 0:
            raise TypeError(f"data must be a non-empty Dataset of (image, label) pairs, got {type(data).__name__}")
        for name, value in (("batches", batches), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        self.data, self.input_name, self.batches, self.batch_size = data, input_name, batches, batch_size
        self.batch_fn = batch_fn
        self.rewind()

    def get_next(self):
        if self.batch >= self.batches:
            return None
        found = self.batch_fn(self.data, self.input_name, self.batch, self.batch_size)
        self.batch += 1
        return found

    def rewind(self):
        self.batch = 0


def _reader(reader):
    """A student's reader (any object with get_next) wrapped as ONNX Runtime's CalibrationDataReader type."""
    from onnxruntime.quantization import CalibrationDataReader

    if isinstance(reader, CalibrationDataReader):
        return reader
    if not callable(getattr(reader, "get_next", None)):
        raise TypeError(f"a calibration reader needs a get_next() method, got {type(reader).__name__}")

    class Wrapped(CalibrationDataReader):
        def get_next(self):
            return reader.get_next()

    return Wrapped()


def _pre_processed(src, folder):
    """ONNX Runtime's recommended step before quantizing: shapes inferred, graph optimized (a temporary file)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(folder) / "pre.onnx"
    with _quiet():
        quant_pre_process(str(src), str(out))
    return out


def quantize_dynamic_onnx(src, dst):
    """ONNX Runtime's dynamic int8: weights stored as int8 (per tensor); each activation is quantized on the
    fly, its range measured at every call (``DynamicQuantizeLinear``), so no calibration data is needed.
    Convolutions become ``ConvInteger`` and matrix products ``MatMulInteger``. Writes ``dst``, returns it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = _check_file(src, (".onnx",)), Path(dst)
    with tempfile.TemporaryDirectory() as folder, _quiet():
        quantize_dynamic(str(_pre_processed(src, folder)), str(Path(folder) / "q.onnx"), weight_type=QuantType.QInt8)
        os.replace(Path(folder) / "q.onnx", dst)
    return dst


def quantize_static_onnx(src, dst, reader, *, per_channel=True):
    """ONNX Runtime's static int8 in the QDQ format: every activation's range is measured once on the
    batches ``reader`` gives (a :class:`CalibrationImages`, or any object with ``get_next``; min-max
    calibration), weights are int8 symmetric (per output channel by default), activations uint8 affine.
    Each tensor gets a QuantizeLinear -> DequantizeLinear pair, which the runtime fuses with the
    operators around it into int8 kernels. Writes ``dst``, returns it."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, dst = _check_file(src, (".onnx",)), Path(dst)
    with tempfile.TemporaryDirectory() as folder, _quiet():
        quantize_static(str(_pre_processed(src, folder)), str(Path(folder) / "q.onnx"), _reader(reader),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        os.replace(Path(folder) / "q.onnx", dst)
    return dst


def openvino_int8(src, dst, data, *, images=300):
    """NNCF's post-training int8 of an ONNX file for OpenVINO: activations' ranges from the first ``images``
    images of ``data`` (a Dataset of (image, label) pairs), written as an IR (``dst`` .xml and its .bin)."""
    import nncf
    import openvino as ov

    src, dst = _check_file(src, (".onnx",)), Path(dst)
    if dst.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR is an .xml file (with a .bin beside it), got {dst.name!r}")
    if not isinstance(data, Dataset) or len(data) == 0:
        raise TypeError(f"data must be a non-empty Dataset of (image, label) pairs, got {type(data).__name__}")
    count = min(images, len(data))
    samples = [data[i][0][None].numpy().astype(np.float32) for i in range(count)]
    nncf.set_log_level(logging.ERROR)
    # NNCF draws progress bars with rich, which in Jupyter would display them as widgets: told it is not in
    # Jupyter, rich writes them to the redirected stream instead
    with _quiet(), mock.patch("rich.console._is_jupyter", return_value=False):
        quantized = nncf.quantize(ov.Core().read_model(str(src)), nncf.Dataset(samples), subset_size=count)
        ov.save_model(quantized, str(dst), compress_to_fp16=False)
    return dst


def agreement(model, reference, data, batch_size=500):
    """The share of ``data``'s images (a Dataset of (image, label) pairs) on which ``model`` and
    ``reference`` predict the same class (top-1)."""
    if not isinstance(data, Dataset) or len(data) == 0:
        raise TypeError(f"data must be a non-empty Dataset of (image, label) pairs, got {type(data).__name__}")
    same = 0
    with torch.inference_mode():
        for images, _ in torch.utils.data.DataLoader(data, batch_size=batch_size):
            same += (model(images).argmax(1) == reference(images).argmax(1)).sum().item()
    return same / len(data)


def runtime_forms(onnx_path, calibration_data, *, threads=1, batches=8, batch_size=32, batch_fn=calibration_batch):
    """The five deployed forms of one exported fp32 ONNX file, as ``{label: Deployed}``: ONNX Runtime fp32,
    int8 dynamic and int8 static (QDQ, calibrated on ``batches`` batches of ``calibration_data``, each made by
    ``batch_fn``), OpenVINO fp32 and OpenVINO int8 (NNCF, on as many images). The int8 files are written
    beside ``onnx_path``. Every form runs on ``threads`` threads."""
    src = _check_file(onnx_path, (".onnx",))
    stem = src.with_suffix("")
    dynamic = quantize_dynamic_onnx(src, f"{stem}_int8_dynamic.onnx")
    static = quantize_static_onnx(src, f"{stem}_int8_static.onnx",
                                  CalibrationImages(calibration_data, INPUT, batches, batch_size, batch_fn))
    ov_int8 = openvino_int8(src, f"{stem}_openvino_int8.xml", calibration_data, images=batches * batch_size)
    return {"ONNX Runtime fp32": onnxruntime_model(src, threads=threads, label="ONNX Runtime fp32"),
            "ONNX Runtime int8 dynamic": onnxruntime_model(dynamic, threads=threads, label="ONNX Runtime int8 dynamic"),
            "ONNX Runtime int8 static": onnxruntime_model(static, threads=threads, label="ONNX Runtime int8 static"),
            "OpenVINO fp32": openvino_model(src, threads=threads, label="OpenVINO fp32"),
            "OpenVINO int8": openvino_model(ov_int8, threads=threads, label="OpenVINO int8")}


def deploy_table(forms, reference, test_data, *, repeat=30, threads=1):
    """One row per form (``{label: model}``, PyTorch models and :class:`Deployed` ones alike): file size,
    accuracy on ``test_data``, top-1 agreement with ``reference`` (the PyTorch fp32 model they all come
    from), batch-1 latency and batch-64 throughput, every form timed interleaved in one run on
    ``threads`` threads (``helpers.time_models``), and ``x faster b1`` against the first form."""
    import pandas as pd

    from .measure import model_size, time_models
    from .train import evaluate

    if not isinstance(forms, dict) or not forms:
        raise TypeError("deploy_table expects a dict of {label: model}")
    x1, x64 = test_data[0][0][None], torch.stack([test_data[i % len(test_data)][0] for i in range(64)])
    batch1 = time_models(forms, x1, threads=threads, repeat=repeat)
    batch64 = time_models(forms, x64, threads=threads, repeat=max(3, repeat // 3))
    rows = {}
    for label, model in forms.items():
        rows[label] = {"size_bytes": model_size(model), "accuracy": evaluate(model, test_data),
                       "agreement": agreement(model, reference, test_data),
                       "latency_b1_ms": batch1.loc[label, "latency_ms"], "spread_b1_ms": batch1.loc[label, "spread_ms"],
                       "images_per_s_b64": 64e3 / batch64.loc[label, "latency_ms"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["x faster b1"] = table["latency_b1_ms"].iloc[0] / table["latency_b1_ms"]
    table.attrs["threads"] = threads
    return table


# ---------------------------------------------------------------- load time and memory, in a process of its own

# Run as `python -c SERVE runtime path batch calls threads`: it imports only the runtime it serves,
# so the memory it reports is what a serving process of that runtime needs.
SERVE = r"""
import json, sys, time
runtime, path, batch, calls, threads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
def status_mb(field):  # VmRSS: resident now; VmHWM: its peak (this process's own, unlike ru_maxrss after a fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 2**10
def rss_mb():
    return status_mb("VmRSS")
start = time.perf_counter()
import numpy as np
if runtime == "onnxruntime":
    import onnxruntime as ort
    imported, before = time.perf_counter(), rss_mb()
    o = ort.SessionOptions(); o.intra_op_num_threads = threads; o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]); name = s.get_inputs()[0].name
    run = lambda x: s.run(None, {name: x})[0]
elif runtime == "openvino":
    import openvino as ov
    imported, before = time.perf_counter(), rss_mb()
    c = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                              "INFERENCE_PRECISION_HINT": "f32"})
    r = c.create_infer_request(); run = lambda x: r.infer([x])[0]
else:
    import torch
    torch.set_num_threads(threads)
    imported, before = time.perf_counter(), rss_mb()
    m = torch.jit.load(path) if runtime == "torchscript" else torch.export.load(path).module()
    run = lambda x: m(torch.from_numpy(x))
    torch.inference_mode().__enter__()
x = np.zeros((batch, 1, 28, 28), np.float32)
loaded = time.perf_counter()
run(x)
first = time.perf_counter()
for _ in range(calls):
    run(x)
peak = status_mb("VmHWM")
print(json.dumps({"import_s": imported - start, "load_s": loaded - imported, "first_call_ms": 1e3 * (first - loaded),
                  "rss_after_import_MB": before, "peak_rss_MB": peak}))
"""
RUNTIMES = {"onnxruntime": (".onnx",), "openvino": (".onnx", ".xml"), "torchscript": (".pt",),
            "torch.export": (".pt2",)}


def serve_stats(runtime, path, *, batch=1, calls=20, threads=1, timeout=300):
    """Load ``path`` with ``runtime`` in a new Python process that imports nothing else, serve ``calls``
    calls at ``batch``, and report, as a dict: ``import_s`` (importing the runtime), ``load_s`` (reading the
    file and preparing the model), ``first_call_ms``, ``rss_after_import_MB`` (the process's resident
    memory once the runtime is imported, before the model) and ``peak_rss_MB`` (its peak, the model
    served). ``runtime``: "onnxruntime", "openvino", "torchscript" (a ``torch.jit.save`` file) or
    "torch.export" (a ``torch.export.save`` .pt2 file). Linux only (it reads ``/proc/self/status``).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
    path = _check_file(path, RUNTIMES[runtime])
    _check_threads(threads)
    for name, value in (("batch", batch), ("calls", calls)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", SERVE, runtime, str(path), str(batch), str(calls), str(threads)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"serving {path.name} with {runtime} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the smallest file: 4-bit codebooks, packed

def kmeans_codebook(w, bits=4, iterations=30):
    """Weight sharing (Deep Compression, Han et al. 2016): the values of ``w`` clustered into ``2**bits``
    shared values by k-means (Lloyd's iterations, centroids first spread evenly between min and max, the
    "linear" initialisation the paper found best). Returns ``(codebook, codes)``: a float32 tensor of
    ``2**bits`` values and a uint8 tensor of ``w``'s shape such that ``codebook[codes]`` approximates ``w``.
    """
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise TypeError(f"w must be a floating-point tensor, got {type(w).__name__}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be a whole number from 1 to 8, got {bits!r}")
    values = w.detach().float().flatten()
    codebook = torch.linspace(values.min().item(), values.max().item(), 2 ** bits)
    for _ in range(iterations):
        codes = (values[:, None] - codebook[None]).abs().argmin(1)
        sums = torch.zeros_like(codebook).index_add_(0, codes, values)
        counts = torch.bincount(codes, minlength=len(codebook)).float()
        updated = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)  # an empty cluster stays put
        if torch.equal(updated, codebook):
            break
        codebook = updated
    codes = (values[:, None] - codebook[None]).abs().argmin(1)
    return codebook, codes.to(torch.uint8).reshape(w.shape)


def _by_row(factors, dims):
    """Per-row ``factors`` shaped to multiply a weight of ``dims`` dimensions row by row."""
    return factors.view(-1, *[1] * (dims - 1))


def _shared(w, per_row):
    """``(codebook, codes, scale)`` of 4-bit shared values for the weight ``w``: with ``per_row``, each output
    row divided first by its largest ``|w|`` (kept as ``scale``, rounded to float16 as it is stored; 1 for a row
    of zeros), so that a row of small weights gets values of its own; ``scale`` is None otherwise. The codebook
    is rounded to float16 too, so a model built from these values (before any training) is exactly the one the
    file holds."""
    w = w.detach().float()
    scale = None
    if per_row:
        scale = w.flatten(1).abs().amax(1).half().float()
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        w = w / _by_row(scale, w.dim())
    codebook, codes = kmeans_codebook(w, 4)
    return codebook.half().float(), codes, scale


class SharedValues(nn.Module):
    """Weight sharing as a parametrization (``torch.nn.utils.parametrize``): the layer's weight becomes
    ``scale[row] * codebook[codes]``, a fixed code per weight looking up one of the codebook's shared values,
    each output row times a factor of its own (or no factor when ``scale`` is None). The codebook and the
    scales are parameters, so ordinary training trains them: Deep Compression's trained quantization, where a
    shared value's gradient is the sum of the gradients of the weights that use it (here each times its row's
    factor, as autograd computes it). The codes never change.
    """

    def __init__(self, codebook, codes, scale=None):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("codes", codes.detach().clone())
        self.scale = None if scale is None else nn.Parameter(scale.detach().clone())

    def forward(self, weight):  # the layer's own weight is not used: the shared values replace it
        shared = self.codebook[self.codes.long()]
        return shared if self.scale is None else shared * _by_row(self.scale, shared.dim())


def _sharing(layer):
    """The :class:`SharedValues` that make ``layer``'s weight, or None."""
    if parametrize.is_parametrized(layer, "weight"):
        found = [p for p in layer.parametrizations.weight if isinstance(p, SharedValues)]
        return found[0] if found else None
    return None


def share_weights(model, *, per_row=True):
    """A copy of ``model`` in which the weight of every ``Conv2d`` and ``Linear`` is made of 16 shared values
    (:class:`SharedValues`, by :func:`kmeans_codebook`; with ``per_row``, over each weight divided by its
    row's largest ``|w|``). Fine-tune the copy (``fit`` or ``compress.distill``; the shared values, row
    scales and biases train, the codes stay) and :func:`save_packed` writes it as it is. ``model`` is left
    unchanged."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"share_weights expects an nn.Module, got {type(model).__name__}")
    shared = copy.deepcopy(model)
    for layer in shared.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and _sharing(layer) is None:
            parametrize.register_parametrization(layer, "weight", SharedValues(*_shared(layer.weight, per_row)))
    return shared


def pack_nibbles(codes):
    """4-bit codes (a uint8 tensor of values 0..15, any shape) packed two per byte, in order: code ``2i`` in
    the low 4 bits of byte ``i``, code ``2i + 1`` in its high 4 bits; an odd count leaves the last high half 0.
    Returns a 1-D uint8 tensor of ``ceil(n / 2)`` bytes. Raises TypeError unless ``codes`` is a uint8 tensor,
    ValueError when a code is above 15."""
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.uint8:
        raise TypeError(f"codes must be a uint8 tensor, got {type(codes).__name__}"
                        f"{' of ' + str(codes.dtype) if isinstance(codes, torch.Tensor) else ''}")
    flat = codes.flatten()
    if flat.numel() and flat.max() > 15:
        raise ValueError(f"a 4-bit code is 0..15, got {int(flat.max())}")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack_nibbles(packed, count):
    """The first ``count`` 4-bit codes of bytes packed by :func:`pack_nibbles`, as a 1-D uint8 tensor."""
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor, got {type(packed).__name__}")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 2 * packed.numel():
        raise ValueError(f"count must be a whole number from 0 to {2 * packed.numel()}, got {count!r}")
    return torch.stack([packed & 15, packed >> 4], dim=1).flatten()[:count]


def _layers(model):
    """The chain of layers of a model made of nested ``nn.Sequential`` containers (Dropout left out)."""
    out = []
    for layer in model:
        if isinstance(layer, nn.Sequential):
            out += _layers(layer)
        elif not isinstance(layer, nn.Dropout):
            out.append(layer)
    return out


def _spec(layer):
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            raise TypeError("save_packed keeps Conv2d layers with numeric zero padding")
        return {"type": "Conv2d", "in": layer.in_channels, "out": layer.out_channels, "kernel": list(layer.kernel_size),
                "stride": list(layer.stride), "padding": list(layer.padding), "dilation": list(layer.dilation),
                "groups": layer.groups, "bias": layer.bias is not None}
    if isinstance(layer, nn.Linear):
        return {"type": "Linear", "in": layer.in_features, "out": layer.out_features, "bias": layer.bias is not None}
    if isinstance(layer, nn.ReLU):
        return {"type": "ReLU"}
    if isinstance(layer, nn.MaxPool2d):
        return {"type": "MaxPool2d", "kernel": layer.kernel_size, "stride": layer.stride, "padding": layer.padding}
    if isinstance(layer, nn.Flatten):
        return {"type": "Flatten", "start": layer.start_dim, "end": layer.end_dim}
    raise TypeError(f"save_packed keeps chains of Conv2d, Linear, ReLU, MaxPool2d and Flatten layers; got "
                    f"{type(layer).__name__} (fold BatchNorm into the convolutions first: helpers.compress.fuse_bn)")


def _build(spec):
    kind = spec["type"]
    if kind == "Conv2d":
        return nn.Conv2d(spec["in"], spec["out"], spec["kernel"], spec["stride"], spec["padding"], spec["dilation"],
                         spec["groups"], bias=spec["bias"])
    if kind == "Linear":
        return nn.Linear(spec["in"], spec["out"], bias=spec["bias"])
    if kind == "ReLU":
        return nn.ReLU(inplace=True)
    if kind == "MaxPool2d":
        return nn.MaxPool2d(spec["kernel"], spec["stride"], spec["padding"])
    return nn.Flatten(spec["start"], spec["end"])


MAGIC = b"CMPK1"  # the packed file format, version 1


def save_packed(model, path, *, bits=4, per_row=True, entropy=True):
    """Write a chain of layers (an ``nn.Sequential`` of Conv2d, Linear, ReLU, MaxPool2d, Flatten; nested
    chains spliced, Dropout dropped, BatchNorm folded first) to one small file; returns its size in bytes.

    With ``bits=4`` each layer's weight is stored as shared values: a 16-value codebook in float16 and one
    4-bit code per weight, two per byte (:func:`pack_nibbles`), and with ``per_row`` a float16 factor per
    output row. A layer already made of shared values (:func:`share_weights`, fine-tuned or not) is written
    as it is; any other is clustered here (:func:`kmeans_codebook`). Biases stay float32. With ``bits=None``
    every tensor is kept in float32 (a plain, exact copy). The file is a short header (the format, a JSON
    description of the layers and of each stored tensor) and the bytes of the tensors; with ``entropy`` it
    is compressed by LZMA, the stage Deep Compression fills with Huffman coding (codes that occur often get
    shorter bit strings). Nothing in it is code: :func:`load_packed` builds the layers from the description.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_packed expects an nn.Sequential model, got {type(model).__name__}")
    if bits not in (4, None) or isinstance(bits, bool):
        raise ValueError(f"bits must be 4 (codebooks) or None (float32), got {bits!r}")
    layers = _layers(model) if isinstance(model, nn.Sequential) else [model]
    specs, tensors, chunks = [_spec(layer) for layer in layers], [], []
    for i, layer in enumerate(layers):
        for name in ("weight", "bias"):
            if getattr(layer, name, None) is None:
                continue
            entry = {"layer": i, "name": name, "shape": list(getattr(layer, name).shape)}
            if bits == 4 and name == "weight":
                sharing = _sharing(layer)
                codebook, codes, scale = ((sharing.codebook, sharing.codes, sharing.scale) if sharing is not None
                                          else _shared(layer.weight, per_row))
                data = codebook.detach().cpu().half().numpy().tobytes()
                if scale is not None:
                    data += scale.detach().cpu().half().numpy().tobytes()
                data += pack_nibbles(codes.cpu()).numpy().tobytes()
                entry.update(kind="kmeans4", row_scales=scale is not None)
            else:
                data = getattr(layer, name).detach().cpu().float().numpy().astype("<f4").tobytes()
                entry.update(kind="float32")
            tensors.append({**entry, "bytes": len(data)})
            chunks.append(data)
    header = json.dumps({"layers": specs, "tensors": tensors}, separators=(",", ":")).encode()
    body = struct.pack("<I", len(header)) + header + b"".join(chunks)
    blob = MAGIC + (b"X" + lzma.compress(body, preset=9 | lzma.PRESET_EXTREME) if entropy else b"-" + body)
    with atomic_file(path) as file:
        file.write(blob)
    return len(blob)


def load_packed(path):
    """The ``nn.Sequential`` written by :func:`save_packed`, codes unpacked and looked up in their codebooks,
    times their rows' factors (float32 weights again), in eval mode. Raises ValueError for a file of another
    format."""
    blob = Path(path).read_bytes()
    if not blob.startswith(MAGIC) or blob[len(MAGIC):len(MAGIC) + 1] not in (b"X", b"-"):
        raise ValueError(f"{Path(path).name} is not a file written by save_packed")
    body = blob[len(MAGIC) + 1:]
    body = lzma.decompress(body) if blob[len(MAGIC):len(MAGIC) + 1] == b"X" else body
    size = struct.unpack("<I", body[:4])[0]
    header, offset = json.loads(body[4:4 + size]), 4 + size
    model = nn.Sequential(*[_build(spec) for spec in header["layers"]])
    with torch.no_grad():
        for entry in header["tensors"]:
            data = body[offset:offset + entry["bytes"]]
            offset += entry["bytes"]
            shape = entry["shape"]
            if entry["kind"] == "kmeans4":
                halves = np.frombuffer(data, "<f2", count=16 + (shape[0] if entry.get("row_scales") else 0))
                halves = torch.from_numpy(halves.astype(np.float32))
                codes = unpack_nibbles(torch.from_numpy(np.frombuffer(data[2 * len(halves):], np.uint8).copy()),
                                       int(np.prod(shape)))
                value = halves[:16][codes.long()].reshape(shape)
                if entry.get("row_scales"):
                    value = value * _by_row(halves[16:], len(shape))
            else:
                value = torch.from_numpy(np.frombuffer(data, "<f4").copy()).reshape(shape)
            getattr(model[entry["layer"]], entry["name"]).copy_(value)
    return model.eval()


def compressed_model(name, train_data=None, *, fast=None, refresh=False):
    """``make bench``'s compressed net, ready to deploy: the pipeline's "BN folded" step of ``name``
    ("vgg" or "tree"; pruned, low rank for the VGG, BN folded, fine-tuned by distillation), fp32.

    Kept in ``data/models/<name>_compressed[-fast].cmpk`` (:func:`save_packed` with ``bits=None``: exact);
    when that file is missing (or ``refresh``), the pipeline is run on ``train_data`` (minutes in full
    mode, seconds in fast mode) and its result kept. ``make bench`` writes it too. Either way the net comes
    back as :func:`load_packed` builds it: one flat chain (low rank's pair spliced in), Dropout left out.
    """
    from . import pipeline

    if name not in pipeline.PLANS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(pipeline.PLANS)}")
    path = DATA_DIR / "models" / f"{name}_compressed{'-fast' if (FAST if fast is None else fast) else ''}.cmpk"
    if path.exists() and not refresh:
        try:
            return load_packed(path)
        except Exception as error:  # noqa: BLE001 -- unreadable: set it aside, compress again
            os.replace(path, path.with_name(path.name + ".bad"))
            warnings.warn(f"could not load {path.name} ({type(error).__name__}); moved it aside", stacklevel=2)
    if train_data is None:
        raise ValueError(f"no kept compressed {name} net yet: pass train_data to compress it")
    steps = pipeline.compress_steps(name, pipeline.MODELS[name](), train_data, fast=FAST if fast is None else fast)
    return load_packed(keep_compressed(name, steps["BN folded"], fast=fast))  # the same form, kept or not


def keep_compressed(name, model, *, fast=None):
    """Keep a compressed net where :func:`compressed_model` finds it (exact, float32); returns the path."""
    path = DATA_DIR / "models" / f"{name}_compressed{'-fast' if (FAST if fast is None else fast) else ''}.cmpk"
    save_packed(model, path, bits=None, entropy=False)
    return path
