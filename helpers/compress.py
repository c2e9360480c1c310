"""Compression techniques as reusable functions, for the pipeline notebook and later lessons.

Each technique is first built from scratch in its own lesson; these are the tested, reusable
versions. Every function returns a new model and leaves the one passed in unchanged.

Pruning:

* :func:`prune_unstructured`: zero the smallest-magnitude weights of the conv and linear layers
  (``torch.nn.utils.prune``, made permanent). Same shapes, same file size, same speed: only zeros.
* :func:`make_permanent`: turn the masks of a model pruned with ``keep_masks=True`` into plain zeros.
* :func:`prune_channels`: remove whole output channels of the convolutions and rebuild smaller
  dense layers (Conv -> BN -> Conv, and Conv -> Flatten -> Linear), so the model really shrinks.
* :func:`sparsity`: the fraction of conv and linear weights that are zero.

Quantization:

* :func:`quantize`: an int8 copy of a model for CPU inference (post-training static quantization).
* :func:`quantized_engine`: which of PyTorch's quantized CPU engines it uses on this machine.
"""
import copy

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv2d, nn.Linear)
PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)


def _check(model, amount):
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < 1:
        raise ValueError(f"amount is the fraction to remove, a number in [0, 1) such as 0.5; got {amount!r}")


def sparsity(model):
    """Fraction of the weights of conv and linear layers that are exactly zero."""
    weights = [m.weight for m in model.modules() if isinstance(m, PRUNABLE)]
    if not weights:
        raise ValueError("the model has no Conv2d or Linear layer")
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def prune_unstructured(model, amount, scope="global", keep_masks=False):
    """A copy of ``model`` with the fraction ``amount`` of its conv and linear weights set to zero.

    ``scope="global"`` ranks all weights together by magnitude (layers that matter less lose more);
    ``scope="layer"`` removes ``amount`` of every layer. Biases are kept. By default the zeros are
    permanent (``prune.remove``): the copy is an ordinary model with the same shapes as the original.
    With ``keep_masks=True`` the copy keeps ``torch.nn.utils.prune``'s masks, so that fine-tuning
    it leaves the pruned weights at zero; call :func:`make_permanent` when the training is done.
    """
    _check(model, amount)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    pruned = copy.deepcopy(model)
    layers = [(m, "weight") for m in pruned.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        raise ValueError("the model has no Conv2d or Linear layer to prune")
    if scope == "global":
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=float(amount))
    else:
        for module, name in layers:
            prune.l1_unstructured(module, name, amount=float(amount))
    return pruned if keep_masks else make_permanent(pruned)


def make_permanent(model):
    """Remove ``torch.nn.utils.prune``'s masks from ``model`` (in place), keeping the zeros; returns it."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def _l1_importance(conv):
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def prune_channels(model, amount, importance=None):
    """A smaller dense copy of ``model`` with the fraction ``amount`` of each conv's output channels removed.

    ``model`` must be an ``nn.Sequential`` of Conv2d (groups=1), BatchNorm2d, activations, pooling,
    Dropout, Flatten and Linear layers, such as ``helpers.small_vgg()``. For each convolution the
    channels with the lowest importance are removed, and the layers that read them (the BN after it,
    the next convolution, or the first Linear after a Flatten) are rebuilt to match. The last Linear
    keeps its outputs, so the model's output shape is unchanged.

    ``importance(conv)`` returns one score per output channel; the default is the L1 norm of each
    filter. Pass your own (e.g. from feature-map entropy) to compare criteria.
    """
    _check(model, amount)
    if not isinstance(model, nn.Sequential):
        raise TypeError("prune_channels rebuilds an nn.Sequential model layer by layer, such as helpers.small_vgg()")
    importance = importance or _l1_importance
    layers = [copy.deepcopy(layer) for layer in model]
    kept = None            # indices of the channels (or features) the current layer receives
    channels_before_flatten = None
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1:
                raise TypeError(f"layer {i}: prune_channels handles ordinary convolutions (groups=1), "
                                f"not groups={layer.groups}")
            scores = torch.as_tensor(importance(model[i])).flatten()
            if scores.numel() != layer.out_channels:
                raise ValueError(f"importance gave {scores.numel()} scores for layer {i}, "
                                 f"which has {layer.out_channels} channels")
            n_keep = max(1, round(layer.out_channels * (1 - amount)))
            keep = scores.argsort(descending=True)[:n_keep].sort().values
            layers[i] = _smaller_conv(layer, keep, kept)
            kept, channels_before_flatten = keep, layer.out_channels
        elif isinstance(layer, nn.BatchNorm2d):
            layers[i] = _smaller_bn(layer, kept)
        elif isinstance(layer, nn.Flatten):
            if kept is not None:  # each kept channel brings all of its spatial positions
                area = _linear_after(layers, i).in_features // channels_before_flatten
                kept = (kept[:, None] * area + torch.arange(area)).flatten()
        elif isinstance(layer, nn.Linear):
            layers[i] = _smaller_linear(layer, kept)
            kept = None  # linear outputs are not pruned
        elif not isinstance(layer, PASS_THROUGH):
            raise TypeError(f"layer {i} ({type(layer).__name__}) is not supported by prune_channels; "
                            "it handles Conv2d, BatchNorm2d, Flatten, Linear, activations, pooling and Dropout")
        layers[i].train(layer.training)  # a rebuilt layer keeps the mode (train / eval) of the one it replaces
    return nn.Sequential(*layers)


def _linear_after(layers, index):
    for layer in layers[index + 1:]:
        if isinstance(layer, nn.Linear):
            return layer
    raise TypeError("a Flatten must be followed by a Linear layer")


def _smaller_conv(conv, keep_out, keep_in):
    weight = conv.weight.detach()[keep_out]
    if keep_in is not None:
        weight = weight[:, keep_in]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new.weight.data.copy_(weight)
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.detach()[keep_out])
    return new


def _smaller_bn(bn, keep):
    if keep is None:
        return bn
    new = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    if bn.affine:
        new.weight.data.copy_(bn.weight.detach()[keep])
        new.bias.data.copy_(bn.bias.detach()[keep])
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[keep])
        new.running_var.copy_(bn.running_var[keep])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def _smaller_linear(linear, keep_in):
    if keep_in is None:
        return linear
    new = nn.Linear(len(keep_in), linear.out_features, bias=linear.bias is not None)
    new.weight.data.copy_(linear.weight.detach()[:, keep_in])
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.detach())
    return new


# ---------------------------------------------------------------- quantization

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


def quantize(model, calibration_data, *, batches=8, batch_size=64):
    """An int8 copy of ``model`` for CPU inference: post-training static quantization.

    This is PyTorch's eager flow (``torch.ao.quantization``), the one that runs real int8 kernels on
    the CPU without a compiler: Conv-BN-ReLU runs are fused, observers record the activations' ranges
    on ``batches`` batches of ``calibration_data`` (a Dataset of (image, label) pairs), weights are
    quantized per output channel (symmetric int8) and activations per tensor (affine uint8).
    ``torch.ao.quantization`` (and the quantized tensor type it builds on) is deprecated in favour of
    torchao; notebook 06 explains this, and the deprecation warnings are silenced here only.

    ``model`` must be an ``nn.Sequential`` of Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and
    Linear layers, such as ``helpers.small_vgg()`` or a model pruned with :func:`prune_channels`.
    The quantized engine (see :func:`quantized_engine`) is selected globally, as PyTorch requires.
    """
    import warnings

    import torch.ao.quantization as tq
    from torch.utils.data import DataLoader, Dataset

    if not isinstance(model, nn.Sequential):
        raise TypeError("quantize handles nn.Sequential models such as helpers.small_vgg(); "
                        f"got {type(model).__name__}. Other models need torchao's pt2e flow (notebook 06).")
    for i, layer in enumerate(model):
        if not isinstance(layer, QUANTIZABLE):
            raise TypeError(f"layer {i} ({type(layer).__name__}) has no int8 version in this flow; quantize handles "
                            "Conv2d, BatchNorm2d, ReLU, pooling, Flatten, Dropout and Linear layers")
    if not isinstance(calibration_data, Dataset) or len(calibration_data) == 0:
        raise TypeError("calibration_data must be a non-empty Dataset of (image, label) pairs, "
                        "such as load_dataset('fashion-mnist')")
    engine = quantized_engine()
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
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
