"""Pruning (notebook 05): zero the smallest weights, or remove whole channels and rebuild smaller layers."""
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
