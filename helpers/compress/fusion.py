"""Fusion and re-parameterisation (notebook 09): fold BN, merge parallel branches, freeze for deployment."""
import copy
import io
import warnings

import torch
from torch import nn


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
    from ..models import RepVGGBlock

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
    from ..models import TreeBlock

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
