"""Notebook 05 (pruning): a global magnitude mask, a weight packed as a bit mask and its values, one
conv + BatchNorm pair rebuilt without its k weakest channels; three costs worked out by hand; and the
challenge: at least 85% of the VGG's weights zero, within 1 point of its accuracy."""
import torch
from torch import nn

from ..compress import pruning
from . import Case, difference, exercise
from .challenges import define


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed, scale=1.0):
    return torch.randn(*shape, generator=_gen(seed)) * scale


# ---------------------------------------------------------------- 05.1: a global magnitude mask

def _masks(got, want):
    """Compare lists of masks, naming the tensor whose mask differs."""
    if not isinstance(got, (list, tuple)):
        return f"returned {type(got).__name__}, expected a list of {len(want)} masks, one per tensor"
    if len(got) != len(want):
        return f"returned {len(got)} masks, expected {len(want)}, one per tensor"
    for i, (g, w) in enumerate(zip(got, want)):
        problem = difference(g, w)
        if problem:
            return f"the mask of weights[{i}]: {problem}"
    return None


@exercise("05.1", "one magnitude threshold for all the layers together", reference=pruning.global_magnitude_masks,
          compare=_masks,
          hint="All |w| in one vector of n entries, k = round(amount * n), t = its k-th smallest (nothing removed "
               "when k = 0); each mask is (|w| > t) as a float tensor of w's dtype.")
def _global_mask_cases():
    conv, linear, other = _randn(6, 3, 3, 3, seed=0), _randn(10, 12, seed=1), _randn(4, 10, seed=2)
    partly_pruned = _randn(8, 8, seed=3)
    partly_pruned[::2] = 0.0  # 32 exact zeros among 64
    return [Case("a conv weight [6, 3, 3, 3] and a linear weight [10, 12], amount 0.5", ([conv, linear], 0.5)),
            Case("three layers whose weights differ 100-fold in size: the small layer loses the most (one threshold, "
                 "not one per layer)", ([linear, conv * 0.01, other * 10], 0.5)),
            Case("k = amount * n = 0.1 * 47 = 4.7 is not whole: round it to 5", ([_randn(20, seed=4),
                                                                                  _randn(27, seed=5)], 0.1)),
            Case("a layer already partly pruned: its exact zeros go first", ([partly_pruned, linear], 0.25)),
            Case("amount = 0 keeps every weight", ([conv, linear], 0.0)),
            Case("amount = 1 removes every weight", ([conv, linear], 1.0)),
            Case("a single tensor: the same as pruning that layer alone", ([other], 0.75)),
            Case("amount = 1.5 is not a fraction", ([conv, linear], 1.5), raises=ValueError),
            Case("amount = -0.1 is not a fraction", ([conv, linear], -0.1), raises=ValueError)]


# ---------------------------------------------------------------- 05.2: bit mask + values

def _packed(got, want):
    """Compare two packed weights entry by entry, naming the entry that differs."""
    if not isinstance(got, dict):
        return f"returned {type(got).__name__}, expected a dict with 'shape', 'bits' and 'values'"
    if set(got) != set(want):
        return f"returned a dict with keys {sorted(got)}, expected {sorted(want)}"
    for key in ("shape", "bits", "values"):
        problem = difference(got[key], want[key])
        if problem:
            return f"the {key!r}: {problem}"
    return None


@exercise("05.2", "a weight as a bit mask (one bit per entry) and its non-zero values", reference=pruning.pack_sparse,
          compare=_packed,
          hint="Flags (weight != 0).flatten(), padded with zeros to a multiple of 8, eight to a byte, the least "
               "significant bit first: byte j = sum of flag[8j + i] * 2**i (flag 8j is worth 1, flag 8j + 7 is worth "
               "128), a uint8; the values are weight[weight != 0].")
def _pack_cases():
    def sparse(*shape, seed, keep=0.3):
        w = _randn(*shape, seed=seed)
        return w * (torch.rand(*shape, generator=_gen(seed + 100)) < keep)

    two_entries = torch.zeros(2, 8)
    two_entries[0, 0], two_entries[1, 1] = 1.5, -2.0  # entries 0 and 9
    return [Case("a 16 x 24 matrix, 70% zeros (a whole number of bytes)", (sparse(16, 24, seed=0),)),
            Case("a conv weight [5, 3, 3, 3]: 135 entries, so the last byte is padded with zero bits",
                 (sparse(5, 3, 3, 3, seed=1),)),
            Case("only entries 0 and 9 non-zero: the order of the bits (entry 8j + i is bit i of byte j, the least "
                 "significant bit first)", (two_entries,)),
            Case("no zeros at all: every bit set", (_randn(3, 8, seed=2),)),
            Case("all zeros: no values", (torch.zeros(4, 6),)),
            Case("a weight that requires grad (an nn.Parameter)", (nn.Parameter(sparse(6, 4, seed=3)),)),
            Case("the layer itself instead of its .weight", (nn.Linear(4, 3),), raises=TypeError)]


# ---------------------------------------------------------------- 05.3: a conv + BN pair without k channels

def _trained_looking_pair(seed, conv):
    """``conv`` and a BatchNorm2d after it with statistics far from their defaults (as after training), so that
    forgetting to copy any of them changes the output."""
    g = _gen(seed)
    conv.weight.data = torch.randn(conv.weight.shape, generator=g) * 0.3
    if conv.bias is not None:
        conv.bias.data = torch.randn(conv.bias.shape, generator=g)
    c = conv.out_channels
    bn = nn.BatchNorm2d(c, eps=1e-3, momentum=0.2)
    bn.weight.data = 0.5 + torch.rand(c, generator=g)
    bn.bias.data = torch.randn(c, generator=g) * 0.5
    bn.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
    bn.running_var.copy_(0.5 + torch.rand(c, generator=g) * 2)
    return conv.eval(), bn.eval()


def _layer_pair(got, want):
    """Compare two (Conv2d, BatchNorm2d) pairs: their types, settings and tensors, naming what differs."""
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return f"returned {type(got).__name__}, expected the pair (conv, bn)"
    (conv, bn), (want_conv, want_bn) = got, want
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        return f"returned ({type(conv).__name__}, {type(bn).__name__}), expected (Conv2d, BatchNorm2d)"
    for setting in ("kernel_size", "stride", "padding", "dilation", "padding_mode"):
        if getattr(conv, setting) != getattr(want_conv, setting):
            return f"the conv's {setting} is {getattr(conv, setting)}, the original's is {getattr(want_conv, setting)}"
    if (conv.bias is None) != (want_conv.bias is None):
        return "the conv has a bias, the original has none" if want_conv.bias is None else \
            "the conv has no bias, the original has one"
    if bn.eps != want_bn.eps or bn.momentum != want_bn.momentum:
        return f"the BatchNorm's eps and momentum are {bn.eps} and {bn.momentum}, the original's {want_bn.eps} " \
               f"and {want_bn.momentum}"
    tensors = [("conv's weight", conv.weight, want_conv.weight), ("conv's bias", conv.bias, want_conv.bias),
               ("BatchNorm's weight (γ)", bn.weight, want_bn.weight), ("BatchNorm's bias (β)", bn.bias, want_bn.bias),
               ("BatchNorm's running_mean", bn.running_mean, want_bn.running_mean),
               ("BatchNorm's running_var", bn.running_var, want_bn.running_var)]
    for name, g, w in tensors:
        problem = None if w is None else difference(g, w)
        if problem:
            return f"the {name}: {problem}"
    return None


@exercise("05.3", "a conv + BatchNorm pair rebuilt without its k weakest channels", reference=pruning.remove_channels,
          compare=_layer_pair,
          hint="keep: the out_channels - k largest L1 norms, sorted back into channel order; a new Conv2d with the "
               "original's settings and weight[keep], bias[keep]; a new BatchNorm2d with its eps and momentum and "
               "weight, bias, running_mean, running_var [keep].")
def _remove_channels_cases():
    bad_bn = _trained_looking_pair(9, nn.Conv2d(3, 8, 3))[0], nn.BatchNorm2d(6)
    return [Case("a 3x3 conv 3 -> 8 and its BatchNorm (trained statistics), remove 3", (*_trained_looking_pair(
                 0, nn.Conv2d(3, 8, 3, bias=False)), 3)),
            Case("a conv with a bias, stride 2 and padding 1 (keep them), remove 4 of 10", (*_trained_looking_pair(
                 1, nn.Conv2d(4, 10, 3, stride=2, padding=1)), 4)),
            Case("a dilated 3x3 conv (dilation 2, reflect padding), remove 5 of 6: one channel left",
                 (*_trained_looking_pair(2, nn.Conv2d(2, 6, 3, padding=2, dilation=2, padding_mode="reflect")), 5)),
            Case("k = 0 removes nothing (a copy of the same pair)", (*_trained_looking_pair(3, nn.Conv2d(3, 5, 1)), 0)),
            Case("k = out_channels would leave no channel", (*_trained_looking_pair(4, nn.Conv2d(3, 5, 3)), 5),
                 raises=ValueError),
            Case("k = -1", (*_trained_looking_pair(5, nn.Conv2d(3, 5, 3)), -1), raises=ValueError),
            Case("a BatchNorm with 6 channels after a conv with 8: not its BatchNorm", (*bad_bn, 2),
                 raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _macs_saved():
    """MACs of notebook 05's conv3 -> conv4 (3x3, 14x14, no bias) at 64 channels in the middle, minus at 48."""
    from ..measure import count_macs

    def pair(middle):
        return nn.Sequential(nn.Conv2d(32, middle, 3, padding=1, bias=False),
                             nn.Conv2d(middle, 64, 3, padding=1, bias=False))

    x = torch.zeros(1, 32, 14, 14)
    return count_macs(pair(64), x) - count_macs(pair(48), x)


def _coo_break_even():
    """Sparsity above which COO (to_sparse) stores a 2-D float32 matrix in fewer bytes than dense."""
    coo = torch.eye(4).to_sparse()
    per_nonzero = (coo.indices().numel() * coo.indices().element_size()
                   + coo.values().numel() * coo.values().element_size()) / coo._nnz()
    return 1 - torch.eye(4).element_size() / per_nonzero


def _fc1_params():
    from ..models import small_vgg

    return sum(p.numel() for p in next(m for m in pruning.prune_channels(small_vgg(), 0.25)
                                       if isinstance(m, nn.Linear)).parameters())


exercise("05.4", "MACs saved in conv3 and conv4 by removing 16 of conv3's output channels", expected=_macs_saved,
         hint="Both layers lose work: conv3 loses 16 whole filters, conv4 loses 16 input channels of each of its "
              "64 filters; a 3x3 conv costs C_in x C_out x 9 x 14 x 14 MACs.")
exercise("05.5", "the sparsity above which COO stores a 2-D matrix in fewer bytes than dense",
         expected=_coo_break_even, hint="Dense: 4 bytes per entry. COO: 20 bytes per non-zero (two int64 indices and "
                                        "a float32 value); find the fraction of non-zeros where the two are equal.")
exercise("05.6", "the parameters of fc1 after prune_channels(small_vgg(), 0.25)", expected=_fc1_params,
         hint="Each kept channel of the last convolution brings its 7 x 7 positions into fc1; count the biases too.")


# ---------------------------------------------------------------- the challenge

def _conv_linear_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _measure(model):
    from ..data import load_dataset
    from ..train import evaluate, trained_small_vgg

    if not isinstance(model, nn.Module):
        raise TypeError(f"challenge 05 measures a model (an nn.Module), got {type(model).__name__}")
    original = trained_small_vgg()
    shapes = [tuple(w.shape) for w in _conv_linear_weights(model)]
    expected = [tuple(w.shape) for w in _conv_linear_weights(original)]
    if shapes != expected:
        raise ValueError("challenge 05 counts the zeros in the VGG's own conv and linear weights: submit a pruned "
                         f"copy of trained_small_vgg() (conv/linear weights of shapes {expected}); this model has "
                         f"{shapes or 'none (an int8 model?)'}")
    test = load_dataset("fashion-mnist", train=False)
    accuracy, original_accuracy = evaluate(model, test), evaluate(original, test)
    return {"accuracy": accuracy, "original accuracy": original_accuracy,
            "points lost vs the original": round(100 * (original_accuracy - accuracy), 9),  # exactly 1 point is 1
            "sparsity": pruning.sparsity(model)}


define("05", "at least 85% of the VGG's conv and linear weights zero, within 1 point of its test accuracy",
       _measure, targets={"sparsity": (">=", 0.85), "points lost vs the original": ("<=", 1.0)}, score="sparsity")
