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
* :func:`teacher_logits`: the teacher's outputs for a whole dataset, computed once for many students.
* :func:`low_rank`: replace Linear layers by two thinner ones from a truncated SVD.

Fusion and re-parameterisation (for inference: every function returns a copy in eval mode):

* :func:`fold_bn`: one Conv2d or Linear that computes a BatchNorm applied to its output.
* :func:`fuse_bn`: fold every BatchNorm that follows a Conv2d or Linear inside a model's ``nn.Sequential`` containers.
* :func:`merge_parallel`: one Conv2d for parallel convolutions of the same input, summed or concatenated.
* :func:`fit_conv`: the Conv2d closest, by least squares, to any module on sample inputs.
* :func:`reparameterize`: each ``RepVGGBlock`` of a model merged into one 3x3 conv (exact).
* :func:`merge_tree_blocks`: each ``TreeBlock`` merged into one 3x3 conv (exact for its linear
  branches, least squares for the non-linear one).
* :func:`freeze`: a model traced and frozen by TorchScript, for deployment: no Python between layers.
"""
import contextlib
import copy
import io
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


def teacher_logits(teacher, data, *, batch_size=512):
    """The ``teacher``'s logits for every item of ``data``, in order (a tensor on the CPU).

    Computed once, they let :func:`distill` train many students without running the teacher again:
    the teacher is in eval mode and the data is not augmented, so its outputs never change.
    """
    from .env import device

    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher_logits expects the teacher as a torch.nn.Module, got {type(teacher).__name__}")
    teacher = teacher.to(device()).eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    with torch.no_grad():
        return torch.cat([teacher(images.to(device())).cpu() for images, *_ in loader])


class _WithLogits(torch.utils.data.Dataset):
    """``data`` with the teacher's logits as a third item: ``(image, label, logits)``."""

    def __init__(self, data, logits):
        self.data, self.logits = data, logits

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, label = self.data[index][:2]
        return image, label, self.logits[index]


def distill(student, teacher, data, *, T=4.0, alpha=0.9, epochs=1, lr=1e-3, batch_size=128, seed=0, progress=True):
    """Train ``student`` (in place) on ``data`` with :func:`distillation_loss` against ``teacher``.

    ``teacher`` is a model, which runs forward in eval mode for every batch and is not changed, or
    its logits for every item of ``data`` from :func:`teacher_logits` (the same training, without
    running the teacher again for each student and epoch). Returns ``fit``'s history.
    """
    from .env import device
    from .train import fit

    _check_distillation(T, alpha)
    if not isinstance(student, nn.Module):
        raise TypeError(f"distill(student, teacher, data): the student must be a torch.nn.Module, got {type(student).__name__}")
    if isinstance(teacher, torch.Tensor):
        if teacher.dim() != 2 or len(teacher) != len(data):
            raise ValueError(f"precomputed teacher logits must have one row per item of data ({len(data)}), got shape "
                             f"{tuple(teacher.shape)}: compute them with teacher_logits(teacher, data) on the same data")
        data = _WithLogits(data, teacher)
    elif isinstance(teacher, nn.Module):
        teacher = teacher.to(device()).eval()
    else:
        raise TypeError("distill(student, teacher, data): the teacher must be a torch.nn.Module or its logits "
                        f"from teacher_logits(teacher, data), got {type(teacher).__name__}")

    def loss_fn(model, images, labels, logits=None):  # logits: precomputed, or None to run the teacher
        if logits is None:
            with torch.no_grad():
                logits = teacher(images)
        outputs = model(images)
        return outputs, distillation_loss(outputs, logits, labels, T, alpha)

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


# ---------------------------------------------------------------- fusion and re-parameterisation

def fold_bn(layer, bn):
    """One Conv2d or Linear computing ``bn(layer(x))`` with ``bn`` in eval mode (its running statistics).

    Per output channel BN computes ``(z - mean) / sqrt(var + eps) * gamma + beta``, an affine map, so
    ``scale = gamma / sqrt(var + eps)`` multiplies the channel's weights and the bias becomes
    ``scale * (bias - mean) + beta``. Uses ``torch.nn.utils.fusion`` (notebook 09 derives it).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not bn.track_running_stats:
        raise TypeError(f"fold_bn folds a BatchNorm1d/2d with running statistics, got {type(bn).__name__}")
    if not isinstance(layer, (nn.Conv2d, nn.Linear)):
        raise TypeError(f"fold_bn folds a BatchNorm into a Conv2d or Linear, got {type(layer).__name__}")
    out = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
    if bn.num_features != out:
        raise ValueError(f"the BatchNorm has {bn.num_features} channels but the layer before it {out} outputs")
    fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
    return fuse(copy.deepcopy(layer).eval(), copy.deepcopy(bn).eval())


def fuse_bn(model):
    """A copy of ``model`` (eval mode) in which each BatchNorm right after a Conv2d or Linear inside an
    ``nn.Sequential`` (at any depth) is folded into that layer and removed. Other layers are kept."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    for sequential in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers = []
        for layer in sequential:
            if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)) and layers and isinstance(layers[-1], (nn.Conv2d, nn.Linear)):
                layers[-1] = fold_bn(layers[-1], layer)
            else:
                layers.append(layer)
        sequential._modules.clear()  # refill the same container, so that the module holding it still does
        for i, layer in enumerate(layers):
            sequential.add_module(str(i), layer)
    return model


def _centred(weight, size):
    """A k x k kernel zero-padded to size x size, centred (a 1x1 conv is a 3x3 conv with zeros around it)."""
    pad = (size - weight.shape[-1]) // 2
    return nn.functional.pad(weight, [pad] * 4)


def merge_parallel(convs, how="sum"):
    """One Conv2d equal to parallel convolutions of the same input whose outputs are summed (``how="sum"``)
    or concatenated along channels (``how="concat"``).

    Each conv needs the same input channels and stride, groups=1, no dilation, an odd square kernel and
    "same" padding (kernel // 2). Smaller kernels are zero-padded to the largest, centred, so that
    every conv looks at the same window; then kernels and biases add up, or stack.
    """
    convs = list(convs)
    if how not in ("sum", "concat"):
        raise ValueError(f"how must be 'sum' or 'concat', got {how!r}")
    if not convs or not all(isinstance(c, nn.Conv2d) for c in convs):
        raise TypeError("merge_parallel needs a non-empty list of nn.Conv2d layers")
    for c in convs:
        k = c.kernel_size[0]
        if (c.groups != 1 or c.dilation != (1, 1) or c.kernel_size != (k, k) or k % 2 == 0
                or c.padding != (k // 2, k // 2) or c.padding_mode != "zeros"):
            raise ValueError(f"merge_parallel handles square odd kernels with 'same' zero padding, groups=1 and no "
                             f"dilation; got {c}")
    if len({(c.in_channels, c.stride) for c in convs}) > 1:
        raise ValueError("parallel convolutions must read the same input: same in_channels and stride, got "
                         f"{[(c.in_channels, c.stride) for c in convs]}")
    if how == "sum" and len({c.out_channels for c in convs}) > 1:
        raise ValueError(f"summed outputs need the same out_channels, got {[c.out_channels for c in convs]}")
    size = max(c.kernel_size[0] for c in convs)
    weights = [_centred(c.weight.detach(), size) for c in convs]
    biases = [c.bias.detach() if c.bias is not None else torch.zeros(c.out_channels) for c in convs]
    combine = sum if how == "sum" else (lambda ts: torch.cat(list(ts)))
    weight, bias = combine(weights), combine(biases)
    merged = nn.Conv2d(convs[0].in_channels, weight.shape[0], size, convs[0].stride, size // 2)
    merged.weight.data.copy_(weight)
    merged.bias.data.copy_(bias)
    return merged.eval()


def identity_conv(channels, kernel_size=1):
    """The Conv2d that returns its input: a 1 at the centre of kernel (c, c), zeros elsewhere."""
    conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, bias=False)
    conv.weight.data.zero_()
    conv.weight.data[range(channels), range(channels), kernel_size // 2, kernel_size // 2] = 1.0
    return conv


def fit_conv(module, inputs, kernel_size=3):
    """The Conv2d (stride 1, "same" padding, with bias) whose output is closest to ``module(inputs)`` in
    least squares: every output pixel is a linear function of the k x k window around it, so the
    windows (``F.unfold``) and the outputs form an ordinary least-squares problem ``X w ≈ y``, solved
    through its normal equations ``XᵀX w = Xᵀy`` (small: one row per window entry) in double precision.
    Exact when ``module`` is itself such a conv; the best linear approximation when it is not.
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd whole number, got {kernel_size!r}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError("inputs must be a batch of feature maps, a tensor of shape (N, C, H, W)")
    with torch.no_grad():
        target = module(inputs)
        if target.shape[0] != inputs.shape[0] or target.shape[2:] != inputs.shape[2:]:
            raise ValueError(f"fit_conv fits modules that keep the height and width; {tuple(inputs.shape)} became "
                             f"{tuple(target.shape)}")
        windows = nn.functional.unfold(inputs, kernel_size, padding=kernel_size // 2)  # N, C*k*k, H*W
        X = windows.transpose(1, 2).reshape(-1, windows.shape[1]).double()
        X = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], dim=1)            # a column of ones: the bias
        Y = target.flatten(2).transpose(1, 2).reshape(-1, target.shape[1]).double()
        solution = torch.linalg.lstsq(X.T @ X, X.T @ Y).solution.float()           # (C*k*k + 1, C_out)
    conv = nn.Conv2d(inputs.shape[1], target.shape[1], kernel_size, padding=kernel_size // 2)
    conv.weight.data.copy_(solution[:-1].T.reshape(conv.weight.shape))
    conv.bias.data.copy_(solution[-1])
    return conv.eval()


def _with_blocks_replaced(model, block_type, replace):
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected an nn.Sequential model such as helpers.tree_net(), got {type(model).__name__}")
    if not any(isinstance(layer, block_type) for layer in model):
        raise ValueError(f"the model has no {block_type.__name__} to merge")
    layers = []
    for layer in copy.deepcopy(model).eval():
        layers += replace(layer, nn.Sequential(*layers)) if isinstance(layer, block_type) else [layer]
    return nn.Sequential(*layers).eval()


def reparameterize(model):
    """A copy of an ``nn.Sequential`` model with each ``RepVGGBlock`` replaced by one 3x3 conv and its ReLU.

    Each branch's BN is folded into its conv (the identity branch is a 1x1 identity conv first), the
    1x1 kernels are padded to 3x3 and the three convs summed: the same function, exactly.
    """
    from .models import RepVGGBlock

    def merge(block, _):
        branches = [fold_bn(*block.conv3), fold_bn(*block.conv1)]
        if block.identity is not None:
            branches.append(fold_bn(identity_conv(block.identity.num_features), block.identity))
        return [merge_parallel(branches, "sum"), nn.ReLU(inplace=True)]

    return _with_blocks_replaced(model, RepVGGBlock, merge)


def merge_tree_blocks(model, data, *, images=128):
    """A copy of an ``nn.Sequential`` model with each ``TreeBlock`` replaced by one 3x3 conv and its ReLU.

    The 1x1 and 3x3 branches are folded and merged exactly; the non-linear ``deep`` branch is replaced
    by the 3x3 conv that :func:`fit_conv` fits to it on the block's inputs for the first ``images``
    images of ``data`` (inputs computed by the already merged layers before it). The result is an
    approximation: fine-tune it.
    """
    from .models import TreeBlock

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be a whole number >= 1, got {images!r}")
    batch = torch.stack([data[i][0] for i in range(min(images, len(data)))])

    def merge(block, layers_before):
        with torch.no_grad():
            inputs = layers_before.cpu()(batch)
        deep = fit_conv(block.deep.cpu(), inputs, kernel_size=3)
        return [merge_parallel([fold_bn(*block.branch1), fold_bn(*block.branch3), deep], "concat"),
                nn.ReLU(inplace=True)]

    return _with_blocks_replaced(model, TreeBlock, merge)


class FrozenModel(nn.Module):
    """A model traced and frozen by TorchScript (see :func:`freeze`), usable like any model.

    The frozen graph holds the weights as constants, so ``state_dict()`` is empty: :meth:`file_bytes`
    gives the size of the file ``torch.jit.save`` writes (``helpers.model_size`` uses it).
    """

    def __init__(self, script, memory_format):
        super().__init__()
        object.__setattr__(self, "script", script)  # not a submodule: its mode cannot be switched
        self.memory_format = memory_format

    def forward(self, x):
        return self.script(x.contiguous(memory_format=self.memory_format))

    def file_bytes(self):
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.save says it is deprecated in favour of torch.export
            torch.jit.save(self.script, buffer)
        return len(buffer.getvalue())


def freeze(model, example, *, channels_last=False):
    """A :class:`FrozenModel`: ``model`` traced on ``example`` by ``torch.jit.trace`` and frozen.

    Freezing inlines the weights, folds BN into convolutions where it can, and the whole forward
    pass runs without going back to Python between layers: at batch 1 that overhead is a large share
    of a small model's time (notebook 09 measures it). Works on fp32 and on eager int8 models. With
    ``channels_last=True`` the model runs on N x H x W x C feature maps. TorchScript is in maintenance
    mode in PyTorch 2.x (its warnings are silenced here) but still shipped and used for deployment.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"freeze expects a torch.nn.Module, got {type(model).__name__}")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(model).eval().to(memory_format=memory_format)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        script = torch.jit.freeze(torch.jit.trace(model, example.contiguous(memory_format=memory_format)))
    return FrozenModel(script, memory_format).eval()
