"""Where the course runs: fast mode, the data folder, seeding and the device.

Fast mode (``COURSE_FAST=1``, set by ``make test``) shrinks data and epochs so that every
notebook runs in about a minute on two CPU cores. It is read once, here, when helpers is
imported; notebooks use ``FAST`` and print :func:`summary` so the reader sees which mode is on.
"""
import contextlib
import logging
import os
import platform
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

# The pinned torch is a CUDA build (the only one that pairs with torchvision here). On a machine
# without a GPU, importing torch.utils.benchmark makes it log "No CUDA runtime is found": expected
# and harmless, so it is not shown to readers.
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

FAST = os.environ.get("COURSE_FAST", "0").strip().lower() not in ("", "0", "false", "no")

# Everything the course writes (datasets, cached models, exports) goes under data/.
DATA_DIR = Path(os.environ.get("COURSE_DATA", Path(__file__).resolve().parent.parent / "data"))


@contextlib.contextmanager
def atomic_file(path, mode="wb"):
    """Write to ``path`` through a temporary file beside it, which replaces ``path`` only once it is
    complete: an interrupted write never leaves half a file. The file is readable by all (0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, suffix=".tmp", delete=False) as tmp:
        try:
            yield tmp
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)  # the temporary file was 0600
    os.replace(tmp.name, path)


def set_seed(seed=0):
    """Seed Python, NumPy and PyTorch so that a run can be repeated exactly."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def device():
    """The GPU when there is one, else the CPU: notebooks run unchanged on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model):
    """The device a model's weights are on (the CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def cpu_only(model):
    """True for a model that can only run on the CPU: one with PyTorch's eager int8 modules, whose packed
    weights and kernels are CPU-only."""
    quantized = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")  # incl. .dynamic
    return any(type(m).__module__.startswith(quantized) for m in model.modules())


@contextlib.contextmanager
def on_device(*models):
    """Lend ``models`` to :func:`device` for the ``with`` block, then give each back where it was.

    The course's one rule about devices: models live on the CPU, where the course measures them;
    training and evaluation borrow the GPU when there is one (``fit``, ``evaluate``, ``distill`` use
    this), so a model never comes back from them on another device than the one it went in on. A model
    that can only run on the CPU (:func:`cpu_only`) is not moved.
    Yields the device the (first) model's weights are on inside the block: move the data there.
    """
    homes = [model_device(model) for model in models]
    try:
        for model in models:
            if not cpu_only(model):  # an int8 model stays on the CPU, where its kernels are
                model.to(device())
        yield model_device(models[0]) if models else device()
    finally:
        for model, home in zip(models, homes):
            model.to(home)


def cpu_flags():
    """The vector instruction sets this CPU has that matter for speed (AVX2, AVX-512, VNNI, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: ask PyTorch what it compiled its kernels for
        return [torch.backends.cpu.get_cpu_capability()]
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"]
    return [f for f in wanted if f in flags]


def summary():
    """One line a reader can quote: mode, device, threads, CPU and library versions."""
    return (
        f"mode: {'FAST (COURSE_FAST=1: small data, few epochs)' if FAST else 'full'} | "
        f"device: {device()} | torch {torch.__version__} | threads: {torch.get_num_threads()} | "
        f"CPU: {platform.machine()} {' '.join(cpu_flags()) or '(no flags read)'}"
    )
