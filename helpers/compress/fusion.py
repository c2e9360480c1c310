"""Fusion and re-parameterisation (notebook 09): fold BN, merge parallel branches, freeze for deployment.

A layer built from other layers is put on the device they are on, so the functions work on a model
wherever it lives (the course keeps models on the CPU; training borrows the GPU, see ``helpers.env``).
"""
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
    biases = [c.bias.detach() if c.bias is not None else c.weight.new_zeros(c.out_channels) for c in convs]
    combine = sum if how == "sum" else (lambda ts: torch.cat(list(ts)))
    weight, bias = combine(weights), combine(biases)
    merged = nn.Conv2d(convs[0].in_channels, weight.shape[0], size, convs[0].stride, size // 2).to(weight.device)
    merged.weight.data.copy_(weight)
    merged.bias.data.copy_(bias)
    return merged.eval()


def fold_avg_pool(pool, conv):
    """One Conv2d computing ``conv(pool(x))``, for a k x k average pool with stride 1 and "same" padding
    (k // 2) that counts the padded zeros (``count_include_pad=True``, PyTorch's default), followed by
    a 1x1 convolution (Inception's pooling branch).

    Such a pool is itself a convolution: each output is the sum of the k x k window, zeros outside the
    image included, divided by k². A 1x1 conv W after it therefore equals one k x k conv with the
    kernel W / k² at every tap, the same padding, and the same bias. With ``count_include_pad=False``
    a window that overlaps the border is divided by the number of pixels inside the image instead
    (fewer than k²), which no fixed kernel does: that pool is refused.
    """
    if not isinstance(pool, nn.AvgPool2d):
        raise TypeError(f"fold_avg_pool folds an nn.AvgPool2d, got {type(pool).__name__}")
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"fold_avg_pool folds the pool into the nn.Conv2d after it, got {type(conv).__name__}")
    k, stride, padding = _pair(pool.kernel_size), _pair(pool.stride), _pair(pool.padding)
    if k[0] != k[1] or k[0] % 2 == 0 or stride != (1, 1) or padding != (k[0] // 2, k[0] // 2):
        raise ValueError(f"fold_avg_pool needs a square, odd average pool with stride 1 and padding kernel // 2 "
                         f"(same output size); got {pool}")
    if not pool.count_include_pad or pool.divisor_override is not None:
        raise ValueError("with count_include_pad=False (or a divisor_override) the pool divides the border windows "
                         "by another number than kernel², so no single convolution equals it; got " + str(pool))
    if (conv.kernel_size != (1, 1) or conv.stride != (1, 1) or conv.padding != (0, 0) or conv.groups != 1
            or conv.dilation != (1, 1)):
        raise ValueError(f"fold_avg_pool folds into a plain 1x1 convolution (stride 1, groups 1); got {conv}")
    size = k[0]
    merged = nn.Conv2d(conv.in_channels, conv.out_channels, size, padding=size // 2).to(conv.weight.device)
    merged.weight.data.copy_(conv.weight.detach().expand(-1, -1, size, size) / size ** 2)
    merged.bias.data.copy_(conv.bias.detach() if conv.bias is not None else conv.weight.new_zeros(conv.out_channels))
    return merged.eval()


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


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
        X = torch.cat([X, X.new_ones(len(X), 1)], dim=1)                           # a column of ones: the bias
        Y = target.flatten(2).transpose(1, 2).reshape(-1, target.shape[1]).double()
        # the small system is solved on the CPU: CUDA's lstsq assumes full rank, and XᵀX need not be
        solution = torch.linalg.lstsq((X.T @ X).cpu(), (X.T @ Y).cpu()).solution.float()  # (C*k*k + 1, C_out)
    conv = nn.Conv2d(inputs.shape[1], target.shape[1], kernel_size, padding=kernel_size // 2).to(inputs.device)
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

    return _with_blocks_replaced(model, RepVGGBlock, lambda block, _: list(merge_repvgg(block)))


def merge_repvgg(block):
    """``nn.Sequential(conv, nn.ReLU())`` computing one ``RepVGGBlock`` in eval mode, ``conv`` a single 3x3 conv.

    Each branch's BN is folded into its conv (:func:`fold_bn`); the identity branch, when the block has
    one, is first a 1x1 conv whose kernel is the identity matrix (:func:`identity_conv`). The 1x1
    kernels are zero-padded to 3x3, centred, and the kernels and biases of the branches summed
    (:func:`merge_parallel`); the conv keeps the block's stride. Raises TypeError for anything but a
    ``helpers.RepVGGBlock``.
    """
    from ..models import RepVGGBlock

    if not isinstance(block, RepVGGBlock):
        raise TypeError(f"merge_repvgg merges a helpers.RepVGGBlock, got {type(block).__name__}")
    branches = [fold_bn(*block.conv3), fold_bn(*block.conv1)]
    if block.identity is not None:
        identity = identity_conv(block.identity.num_features).to(block.identity.weight.device)
        branches.append(fold_bn(identity, block.identity))
    return nn.Sequential(merge_parallel(branches, "sum"), nn.ReLU(inplace=True)).eval()


def tree_branches_exact(block):
    """The linear branches of a ``TreeBlock`` as Conv2d layers that compute them exactly (BN folded):
    the 1x1 branch, the 3x3 branch, and the pooling branch when the block has one (:func:`fold_avg_pool`)."""
    from ..models import TreeBlock

    if not isinstance(block, TreeBlock):
        raise TypeError(f"expected a helpers.TreeBlock, got {type(block).__name__}")
    exact = [fold_bn(*block.branch1), fold_bn(*block.branch3)]
    if block.pool is not None:
        exact.append(fold_avg_pool(block.pool[0], fold_bn(*block.pool[1:])))
    return exact


def merge_tree_blocks(model, data, *, images=128, count=None):
    """A copy of an ``nn.Sequential`` model with its ``TreeBlock``s replaced by one 3x3 conv and its ReLU each.

    The linear branches (1x1, 3x3, and average pool + 1x1 when there is one) are folded and merged
    exactly (:func:`tree_branches_exact`); the non-linear ``deep`` branch is replaced by the 3x3 conv
    that :func:`fit_conv` fits to it on the block's inputs for the first ``images`` images of ``data``
    (inputs computed by the layers before it, already merged ones included). The result is an
    approximation: fine-tune it.

    ``count`` merges only the first ``count`` tree blocks still in the model (``None``: all of them),
    so that the model can be fine-tuned after each block before the next is fitted (block by block).
    Works on the device the model is on.
    """
    from ..env import model_device
    from ..models import TreeBlock

    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be a whole number >= 1, got {images!r}")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count is how many tree blocks to merge, a whole number >= 1 or None (all); got {count!r}")
    batch = torch.stack([data[i][0] for i in range(min(images, len(data)))]).to(model_device(model))
    merged = []

    def merge(block, layers_before):
        if count is not None and len(merged) >= count:
            return [block]
        merged.append(block)
        with torch.no_grad():
            inputs = layers_before(batch)
        branch1, branch3, *pool = tree_branches_exact(block)
        deep = fit_conv(block.deep, inputs, kernel_size=3)
        return [merge_parallel([branch1, branch3, deep, *pool], "concat"), nn.ReLU(inplace=True)]  # forward's order

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
