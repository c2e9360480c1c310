"""Notebook 09 (layer fusion): folding a BatchNorm into the conv before it, merging a RepVGG block into one
3x3 conv, an average pool + 1x1 conv as one conv; and three counts worked out (parameters saved, MACs of a
merged tree block, a dense layer as a convolution). No challenge: the notebook's fusions are exact or
retrained briefly, and there is no target to chase."""
import torch
from torch import nn

from ..compress.fusion import fold_avg_pool, fold_bn, merge_repvgg
from ..measure import count_macs, count_params
from ..models import RepVGGBlock
from . import Case, difference, exercise

SETTINGS = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode")


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _bn(channels, seed, eps=1e-5):
    """A BatchNorm2d in eval mode with made-up statistics, as after training."""
    g = _gen(seed)
    bn = nn.BatchNorm2d(channels, eps=eps)
    bn.running_mean.copy_(torch.rand(channels, generator=g) * 2 - 1)
    bn.running_var.copy_(torch.rand(channels, generator=g) * 1.5 + 0.5)
    bn.weight.data.copy_(torch.rand(channels, generator=g) + 0.5)
    bn.bias.data.copy_(torch.rand(channels, generator=g) - 0.5)
    return bn.eval()


def _seeded(seed, make):
    """``make()`` with the global generator seeded (layers draw their weights from it), leaving the
    notebook's own random stream as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _conv(seed, *args, **kwargs):
    return _seeded(seed, lambda: nn.Conv2d(*args, **kwargs).eval())


def _probe(channels, seed=0):
    return torch.randn(2, channels, 9, 9, generator=_gen(seed))


def _same_conv(got, want):
    """A conv with the reference's settings and the same outputs on a probe input."""
    if not isinstance(got, nn.Conv2d):
        return f"returned {type(got).__name__}, expected an nn.Conv2d"
    for name in SETTINGS:
        if getattr(got, name) != getattr(want, name):
            return f"its {name} is {getattr(got, name)!r}, expected {getattr(want, name)!r}"
    with torch.no_grad():
        x = _probe(want.in_channels)
        problem = difference(got.eval()(x), want(x), rel_tol=1e-4, abs_tol=1e-5)
    return f"its output {problem}" if problem else None


def _one_conv_block(got, want):
    """A module with exactly one Conv2d and no BatchNorm, computing what the block computes."""
    if not isinstance(got, nn.Module) or isinstance(got, nn.Conv2d):
        return f"returned {type(got).__name__}, expected nn.Sequential(conv, nn.ReLU()): the block ends with its ReLU"
    convs = [m for m in got.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in got.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if len(convs) != 1 or norms:
        return (f"it holds {len(convs)} Conv2d and {len(norms)} BatchNorm layers; the merged block holds one Conv2d "
                "(and its ReLU), no BatchNorm")
    with torch.no_grad():
        x = _probe(convs[0].in_channels, seed=1)
        problem = difference(got.eval()(x), want(x), rel_tol=1e-4, abs_tol=1e-5)
    return f"its output {problem}" if problem else None


# ---------------------------------------------------------------- 09.1: fold a BN into the conv before it

@exercise("09.1", "fold a BatchNorm into the convolution before it", reference=fold_bn, compare=_same_conv,
          hint="s = bn.weight / sqrt(bn.running_var + bn.eps); weight s[:, None, None, None] * W; "
               "bias s * (b - running_mean) + bn.bias (b = 0 without a bias); build the new conv with every "
               "setting of the old one.")
def _fold_cases():
    return [Case("a 3x3 conv with a bias, then a BN", (_conv(0, 4, 6, 3, padding=1), _bn(6, 1))),
            Case("a conv without a bias (bias=False, as before most BNs): b = 0",
                 (_conv(1, 4, 6, 3, padding=1, bias=False), _bn(6, 2))),
            Case("a BN with eps = 0.1: use bn.eps, not a fixed 1e-5",
                 (_conv(2, 4, 6, 3, padding=1), _bn(6, 3, eps=0.1))),
            Case("a depthwise 3x3 conv (groups = 8): keep groups",
                 (_conv(3, 8, 8, 3, padding=1, groups=8, bias=False), _bn(8, 4))),
            Case("a grouped conv with stride 2 (groups = 2)",
                 (_conv(4, 4, 6, 3, stride=2, padding=1, groups=2), _bn(6, 5))),
            Case("a dilated 3x3 conv (dilation 2, padding 2)", (_conv(5, 4, 6, 3, padding=2, dilation=2), _bn(6, 6))),
            Case("a conv with reflect padding: keep padding_mode",
                 (_conv(6, 4, 6, 3, padding=1, padding_mode="reflect"), _bn(6, 7))),
            Case("a BN of 5 channels after a conv of 6 outputs", (_conv(7, 4, 6, 3, padding=1), _bn(5, 8)),
                 raises=ValueError),
            Case("an nn.ReLU where the BN should be", (_conv(8, 4, 6, 3, padding=1), nn.ReLU()), raises=TypeError)]


# ---------------------------------------------------------------- 09.2: a RepVGG block as one 3x3 conv

def _repvgg(seed, *args, **kwargs):
    block = _seeded(seed, lambda: RepVGGBlock(*args, **kwargs).eval())
    for i, bn in enumerate(m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.load_state_dict(_bn(bn.num_features, 10 * seed + i).state_dict())  # statistics as after training
    return block


@exercise("09.2", "a RepVGG block merged into one 3x3 conv", reference=merge_repvgg, compare=_one_conv_block,
          hint="Fold each branch (the identity: a 1x1 conv with torch.eye(c) as its kernel, then its BN); pad the "
               "1x1 kernels to 3x3 in the centre (F.pad(w, [1, 1, 1, 1])); add the kernels and the biases into one "
               "3x3 conv with the block's stride and padding 1; then a ReLU.")
def _repvgg_cases():
    return [Case("RepVGGBlock(6, 6): 3x3, 1x1 and identity branches", (_repvgg(1, 6, 6),)),
            Case("RepVGGBlock(4, 8): in != out, so no identity branch (block.identity is None)", (_repvgg(2, 4, 8),)),
            Case("RepVGGBlock(6, 6, stride=2): no identity branch, and the merged conv keeps stride 2",
                 (_repvgg(3, 6, 6, stride=2),)),
            Case("an nn.Conv2d, not a RepVGGBlock", (_conv(9, 6, 6, 3, padding=1),), raises=TypeError)]


# ---------------------------------------------------------------- 09.3: average pool + 1x1 conv = one conv

@exercise("09.3", "an average pool and the 1x1 conv after it as one conv", reference=fold_avg_pool,
          compare=_same_conv,
          hint="A k x k kernel with W / k**2 at every tap (conv.weight.expand(-1, -1, k, k) / k**2), padding k // 2, "
               "the same bias; refuse what no single conv computes (count_include_pad=False, a max pool, "
               "a pool that is not stride 1 with padding k // 2, a conv that is not 1x1).")
def _pool_cases():
    pool3, pool5 = nn.AvgPool2d(3, stride=1, padding=1), nn.AvgPool2d(5, stride=1, padding=2)
    return [Case("a 3x3 average pool (stride 1, padding 1), then a 1x1 conv 8 -> 6", (pool3, _conv(10, 8, 6, 1))),
            Case("a 5x5 pool (padding 2): the kernel is W / 25 at 25 taps", (pool5, _conv(11, 8, 6, 1))),
            Case("a 1x1 conv without a bias", (pool3, _conv(12, 8, 4, 1, bias=False))),
            Case("count_include_pad=False: border windows divided by fewer than 9",
                 (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), _conv(13, 8, 6, 1)),
                 raises=ValueError),
            Case("a 3x3 pool without padding: the map shrinks", (nn.AvgPool2d(3, stride=1), _conv(14, 8, 6, 1)),
                 raises=ValueError),
            Case("a 3x3 conv after the pool, not a 1x1", (pool3, _conv(15, 8, 6, 3, padding=1)), raises=ValueError),
            Case("a max pool: not linear", (nn.MaxPool2d(3, stride=1, padding=1), _conv(16, 8, 6, 1)),
                 raises=TypeError)]


# ---------------------------------------------------------------- worked out

exercise("09.4", "parameters saved by merging a RepVGGBlock(64, 64)",
         expected=lambda: _seeded(0, lambda: count_params(RepVGGBlock(64, 64))
                                  - count_params(merge_repvgg(RepVGGBlock(64, 64).eval()))),
         hint="Training form: a 3x3 and a 1x1 kernel without biases, three BNs with 64 gammas and 64 betas each "
              "(their running statistics are buffers, not parameters); merged: one 3x3 kernel and 64 biases.")
exercise("09.5", "MACs of the merged second tree block (one 3x3 conv, 64 -> 128 channels, 14 x 14 maps)",
         expected=lambda: _seeded(0, lambda: count_macs(nn.Conv2d(64, 128, 3, padding=1), torch.zeros(1, 64, 14, 14))),
         hint="Out channels x in channels x 3 x 3 per output position, and there are 14 x 14 positions.")
exercise("09.6", "parameters of a 6x6 conv (64 -> 100) against max-pool + Dense(100) on a 6x6x64 map",
         expected=lambda: _seeded(0, lambda: count_params(nn.Conv2d(64, 100, 6))
                                  / count_params(nn.Linear(3 * 3 * 64, 100))),
         rel_tol=1e-4,
         hint="The max-pool leaves 3 x 3 positions per channel for the dense layer; the conv needs weights for all "
              "6 x 6. Count the biases on both sides.")
