"""Quantization (notebook 06): an int8 copy of a model for CPU inference, through PyTorch's eager flow."""
import contextlib
import copy
import warnings

import torch
from torch import nn


QUANTIZABLE = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten,
               nn.Dropout, nn.Identity)
ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")  # PyTorch's quantized CPU engines, best first on x86


def _supported_engines():
    return torch.backends.quantized.supported_engines


def quantized_engine():
    """The quantized CPU engine :func:`quantize` uses here: the first of ``ENGINES`` this PyTorch supports."""
    supported = _supported_engines()
    for engine in ENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(f"this PyTorch build has no quantized CPU engine (supported: {supported}), so it cannot "
                       "run int8 models; install an official PyTorch wheel for x86-64 or ARM64")


def _fusable_groups(model):
    """Names of the [Conv2d, BatchNorm2d, ReLU], [Conv2d, BatchNorm2d], [Conv2d, ReLU] and [Linear, ReLU] runs."""
    groups, i = [], 0
    while i < len(model):
        run = [i]
        if isinstance(model[i], nn.Conv2d):
            if i + 1 < len(model) and isinstance(model[i + 1], nn.BatchNorm2d):
                run.append(i + 1)
            if run[-1] + 1 < len(model) and isinstance(model[run[-1] + 1], nn.ReLU):
                run.append(run[-1] + 1)
        elif isinstance(model[i], nn.Linear) and i + 1 < len(model) and isinstance(model[i + 1], nn.ReLU):
            run.append(i + 1)
        if len(run) > 1:
            groups.append([str(j) for j in run])
        i = run[-1] + 1
    return groups


def _spliced(model):
    """One ``nn.Sequential`` chain: the layers of nested ``nn.Sequential`` containers put in their place."""
    layers = []
    for layer in model:
        layers += list(_spliced(layer)) if isinstance(layer, nn.Sequential) else [layer]
    return nn.Sequential(*layers)


@contextlib.contextmanager
def ao_warnings_off():
    """Silence the deprecation warnings of ``torch.ao.quantization`` and of its quantized tensor types.

    They say that the eager flow and the ``quint8``/``qint8`` tensors will go in favour of torchao; in
    PyTorch 2.14 they still run, and notebook 06 explains why the course still uses them. Only these
    three warnings are silenced, only inside the ``with`` block.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
        yield


def quantize(model, calibration_data, *, batches=8, batch_size=64):
    """An int8 copy of ``model`` for CPU inference: post-training static quantization.

    This is PyTorch's eager flow (``torch.ao.quantization``), the one that runs real int8 kernels on
    the CPU without a compiler: Conv-BN-ReLU runs are fused, observers record the activations' ranges
    on ``batches`` batches of ``calibration_data`` (a Dataset of (image, label) pairs), weights are
    quantized per output channel (symmetric int8) and activations per tensor (affine uint8).
    ``torch.ao.quantization`` (and the quantized tensor type it builds on) is deprecated in favour of
    torchao; notebook 06 explains this, and the deprecation warnings are silenced here
    (:func:`ao_warnings_off`).

    ``model`` must be an ``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and
    Linear layers, such as ``helpers.small_vgg()`` or a model pruned with :func:`prune_channels`;
    nested ``nn.Sequential`` containers (the two thin layers :func:`low_rank` makes) are spliced into one chain.
    The quantized engine (see :func:`quantized_engine`) is selected globally, as PyTorch requires.
    """
    import torch.ao.quantization as tq
    from torch.utils.data import DataLoader, Dataset

    if not isinstance(model, nn.Sequential):
        raise TypeError("quantize handles nn.Sequential models such as helpers.small_vgg(); "
                        f"got {type(model).__name__}. Other models need torchao's pt2e flow (notebook 06).")
    model = _spliced(model)
    for i, layer in enumerate(model):
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"layer {i} ({type(layer).__name__}) has no int8 version in this flow; quantize handles "
                            "Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and Linear layers")
    if not isinstance(calibration_data, Dataset) or len(calibration_data) == 0:
        raise TypeError("calibration_data must be a non-empty Dataset of (image, label) pairs, "
                        "such as load_dataset('fashion-mnist')")
    engine = quantized_engine()
    torch.backends.quantized.engine = engine
    with ao_warnings_off():
        fused = tq.fuse_modules(copy.deepcopy(model).cpu().eval(), _fusable_groups(model))
        wrapped = nn.Sequential(tq.QuantStub(), fused, tq.DeQuantStub()).eval()
        wrapped.qconfig = tq.get_default_qconfig(engine)
        prepared = tq.prepare(wrapped)
        with torch.inference_mode():
            for b, (images, _) in enumerate(DataLoader(calibration_data, batch_size=batch_size)):
                if b == batches:
                    break
                prepared(images)
        return tq.convert(prepared)
