"""Pruning (notebook 05): zero the smallest weights, or remove whole channels and rebuild smaller layers.

Whole models: :func:`prune_unstructured`, :func:`make_permanent`, :func:`prune_channels`, :func:`sparsity`.
The pieces notebook 05 has students write, each checked against PyTorch or a plain definition by a unit
test: :func:`global_magnitude_masks` (``torch.nn.utils.prune.global_unstructured``'s masks),
:func:`pack_sparse` / :func:`unpack_sparse` (a weight as a bit mask and its non-zeros) and
:func:`remove_channels` (one Conv2d + BatchNorm2d pair rebuilt without its k weakest channels).
"""
import copy
import math

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


# ---------------------------------------------------------------- the pieces notebook 05 builds from scratch

def global_magnitude_masks(weights, amount):
    """One mask per tensor of ``weights`` for global magnitude pruning: the ``round(amount * n)`` entries of
    smallest ``|w|`` among all ``n`` entries of all the tensors together get 0, the others 1.

    Each mask has its tensor's shape and dtype (like ``torch.nn.utils.prune``'s ``weight_mask``), and the
    masks are those of ``prune.global_unstructured(..., pruning_method=prune.L1Unstructured, amount=amount)``:
    the same ranking (``torch.topk``), so that even ties at the threshold go the same way.
    ``amount`` is a fraction in [0, 1] (ValueError otherwise); ``weights`` a non-empty list of tensors
    (TypeError for anything else, ValueError when empty).
    """
    if isinstance(weights, torch.Tensor) or not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights is a list of tensors (one per layer), got {type(weights).__name__}")
    if not weights:
        raise ValueError("weights is an empty list: there is nothing to prune")
    if not all(isinstance(w, torch.Tensor) for w in weights):
        raise TypeError("every item of weights must be a tensor (a layer's .weight), got "
                        + ", ".join(sorted({type(w).__name__ for w in weights})))
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount <= 1:
        raise ValueError(f"amount is the fraction of all the weights to remove, a number in [0, 1]; got {amount!r}")
    scores = torch.cat([w.detach().abs().flatten().double() for w in weights])
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    k = round(amount * scores.numel())
    if k:
        keep[torch.topk(scores, k, largest=False).indices] = False
    masks, start = [], 0
    for w in weights:
        masks.append(keep[start:start + w.numel()].view(w.shape).to(w.dtype))
        start += w.numel()
    return masks


_BIT = 2 ** torch.arange(8, dtype=torch.uint8)  # the value of bit i of a byte: 1, 2, 4, ..., 128


def pack_sparse(weight):
    """A weight tensor as a bit mask and its non-zero values: ``{"shape", "bits", "values"}``.

    ``shape``: the tensor's shape, a tuple. ``bits``: uint8, one bit per entry in row-major order, eight
    to a byte, entry ``8j + i`` in bit ``i`` (value ``2**i``) of byte ``j``; the last byte is padded with
    zero bits. ``values``: the non-zero entries in row-major order, a 1-D tensor of the weight's dtype.
    Stored this way a tensor of ``n`` entries, ``z`` of them non-zero, takes ``ceil(n / 8) + z * itemsize``
    bytes. TypeError when ``weight`` is not a tensor (a layer, say, instead of its ``.weight``).
    """
    if not isinstance(weight, torch.Tensor):
        hint = ": pass the layer's .weight" if isinstance(weight, nn.Module) else ""
        raise TypeError(f"pack_sparse packs a tensor, got {type(weight).__name__}{hint}")
    weight = weight.detach()
    keep = (weight != 0).flatten()
    keep = torch.cat([keep, keep.new_zeros(-keep.numel() % 8)])  # whole bytes
    bits = (keep.view(-1, 8).to(torch.uint8) * _BIT.to(keep.device)).sum(1, dtype=torch.uint8)
    return {"shape": tuple(weight.shape), "bits": bits, "values": weight[weight != 0]}


def unpack_sparse(packed):
    """The dense tensor of a :func:`pack_sparse` dict (its inverse). ValueError when the dict's parts disagree."""
    if not isinstance(packed, dict) or not {"shape", "bits", "values"} <= set(packed):
        raise TypeError("unpack_sparse expects the dict pack_sparse returns, with 'shape', 'bits' and 'values'")
    n = math.prod(packed["shape"])
    bits, values = packed["bits"], packed["values"]
    if bits.dtype != torch.uint8 or bits.numel() != -(-n // 8):
        raise ValueError(f"a shape of {n} entries needs {-(-n // 8)} uint8 bytes of bits, got {bits.numel()} {bits.dtype}")
    keep = ((bits[:, None] & _BIT.to(bits.device)) != 0).flatten()
    if keep[n:].any() or int(keep.sum()) != values.numel():
        raise ValueError(f"the bit mask marks {int(keep[:n].sum())} non-zeros (and {int(keep[n:].sum())} in the padding), "
                         f"but there are {values.numel()} values")
    dense = values.new_zeros(n)
    dense[keep[:n]] = values
    return dense.view(packed["shape"])


def remove_channels(conv, bn, k):
    """``conv`` followed by ``bn``, rebuilt without the ``k`` output channels whose filters have the smallest
    L1 norm: a new ``(Conv2d, BatchNorm2d)`` pair with ``out_channels - k`` channels.

    The kept channels stay in their original order; the new conv keeps the rows of its weight (and
    bias) and the original's kernel size, stride, padding, dilation and padding mode; the new BatchNorm
    keeps its entries of weight, bias, running mean and running variance, and the same eps and momentum.
    On the kept channels the new pair computes exactly what the old one did. ``conv`` and ``bn`` are left
    unchanged. TypeError for anything but a Conv2d (groups = 1) and a BatchNorm2d; ValueError when ``bn``
    does not have ``conv``'s channels, or ``k`` is not an integer with ``0 <= k < out_channels``.
    """
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"remove_channels rebuilds a Conv2d and the BatchNorm2d after it, "
                        f"got {type(conv).__name__} and {type(bn).__name__}")
    if conv.groups != 1:
        raise TypeError(f"remove_channels handles ordinary convolutions (groups=1), not groups={conv.groups}")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"the BatchNorm has {bn.num_features} channels, the conv {conv.out_channels}: "
                         "it is not the BatchNorm of this conv")
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < conv.out_channels:
        raise ValueError(f"k is the number of channels to remove, an integer from 0 to {conv.out_channels - 1} "
                         f"(at least one channel must stay); got {k!r}")
    keep = _l1_importance(conv).argsort(descending=True)[:conv.out_channels - k].sort().values
    new_conv, new_bn = _smaller_conv(conv, keep, None), _smaller_bn(bn, keep)
    return new_conv.train(conv.training), new_bn.train(bn.training)
