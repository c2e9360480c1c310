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
* :func:`ao_warnings_off`: silence ``torch.ao.quantization``'s deprecation warnings in a ``with`` block.

Distillation and low rank:

* :func:`distillation_loss` and :func:`distill`: train a student on a teacher's softened outputs.
* :func:`low_rank`: replace Linear layers by two thinner ones from a truncated SVD.
"""
import contextlib
import copy
import warnings

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
    Linear layers, such as ``helpers.small_vgg()`` or a model pruned with :func:`prune_channels`.
    The quantized engine (see :func:`quantized_engine`) is selected globally, as PyTorch requires.
    """
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


# ---------------------------------------------------------------- distillation

def _check_distillation(T, alpha):
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"the temperature T must be a number > 0 (1 leaves the softmax as it is; 2-8 is usual), got {T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha weighs the teacher's soft targets against the labels and must be in [0, 1], got {alpha!r}")


def distillation_loss(student_logits, teacher_logits, labels, T=4.0, alpha=0.9):
    """Hinton et al.'s loss: ``alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy``.

    ``teacher_T`` and ``student_T`` are the softmax of the logits divided by ``T``. The KL term is
    averaged over the batch (``reduction="batchmean"``, the true KL divergence per sample) and scaled
    by ``T²`` so that its gradients keep their size whatever the temperature.
    """
    _check_distillation(T, alpha)
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / T, dim=1),
                                nn.functional.log_softmax(teacher_logits / T, dim=1),
                                reduction="batchmean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * nn.functional.cross_entropy(student_logits, labels)


def distill(student, teacher, data, *, T=4.0, alpha=0.9, epochs=1, lr=1e-3, batch_size=128, seed=0, progress=True):
    """Train ``student`` (in place) on ``data`` with :func:`distillation_loss` against ``teacher``.

    The teacher only runs forward, in eval mode, and is not changed. Returns ``fit``'s history.
    """
    from .env import device
    from .train import fit

    _check_distillation(T, alpha)
    if not isinstance(student, nn.Module) or not isinstance(teacher, nn.Module):
        raise TypeError("distill(student, teacher, data): student and teacher must be torch.nn.Module models")
    teacher = teacher.to(device()).eval()

    def loss_fn(model, images, labels):
        with torch.no_grad():
            teacher_logits = teacher(images)
        outputs = model(images)
        return outputs, distillation_loss(outputs, teacher_logits, labels, T, alpha)

    return fit(student, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, loss_fn=loss_fn,
               progress=progress)


# ---------------------------------------------------------------- low rank

def _rank_for(singular_values, rank, energy, name):
    largest = len(singular_values)
    if rank is not None:
        if rank > largest:
            raise ValueError(f"rank {rank} is more than layer {name!r} allows: its weight has rank at most {largest}")
        return rank
    kept = torch.cumsum(singular_values ** 2, 0) / (singular_values ** 2).sum()
    return int((kept < energy - 1e-7).sum()) + 1  # the fewest singular values that keep `energy` of it


def low_rank(model, rank=None, *, energy=None, layers=None):
    """A copy of ``model`` whose Linear layers are each replaced by two thinner ones (truncated SVD).

    ``W ≈ U_r S_r V_rᵀ`` becomes ``Linear(n -> r)`` with weight ``S_r V_rᵀ`` followed by
    ``Linear(r -> m)`` with weight ``U_r`` and the original bias: ``r (m + n)`` weights instead of
    ``m n``. Give either ``rank`` (a whole number >= 1, the same for every layer) or ``energy`` (in
    (0, 1]: per layer, the smallest rank whose singular values keep that fraction of ``sum s²``).
    ``layers`` lists the names (as in ``model.named_modules()``) of the Linear layers to replace;
    by default all of them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if (rank is None) == (energy is None):
        raise ValueError("give either rank (e.g. rank=32) or energy (e.g. energy=0.9), not both and not neither")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1):
        raise ValueError(f"energy is the fraction of the singular values' energy to keep, in (0, 1], got {energy!r}")
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name}
    if not linears:
        raise ValueError("the model has no Linear layer inside it to factorise (a single layer: wrap it, "
                         "nn.Sequential(layer))")
    names = list(linears) if layers is None else list(layers)
    for name in names:
        if name not in linears:
            raise ValueError(f"{name!r} is not a Linear layer of the model; its Linear layers are {list(linears)}")
    new = copy.deepcopy(model)
    for name in names:
        linear = new.get_submodule(name)
        U, S, Vh = torch.linalg.svd(linear.weight.detach(), full_matrices=False)
        r = _rank_for(S, rank, energy, name)
        first = nn.Linear(linear.in_features, r, bias=False)
        second = nn.Linear(r, linear.out_features, bias=linear.bias is not None)
        first.weight.data.copy_(S[:r, None] * Vh[:r])
        second.weight.data.copy_(U[:, :r])
        if linear.bias is not None:
            second.bias.data.copy_(linear.bias.detach())
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, nn.Sequential(first, second))
    return new
