"""The references of notebook 05's exercises (helpers.compress.pruning): equal to PyTorch's own pruning
and layers, and clear on bad input."""
import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from helpers.compress.pruning import (global_magnitude_masks, pack_sparse, prune_channels, remove_channels,
                                      unpack_sparse)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def layers(seed=0):
    g = gen(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 3), nn.Linear(40, 10))
    for m in net:
        m.weight.data = torch.randn(m.weight.shape, generator=g) * (0.1 if isinstance(m, nn.Linear) else 1)
    return net


# ---------------------------------------------------------------- global magnitude masks

@pytest.mark.parametrize("amount", [0.0, 0.1, 0.5, 0.8, 0.97, 1.0])
def test_global_masks_are_torchs_global_unstructured(amount):
    net = layers()
    ours = global_magnitude_masks([m.weight for m in net], amount)
    pruned = copy.deepcopy(net)
    prune.global_unstructured([(m, "weight") for m in pruned], pruning_method=prune.L1Unstructured, amount=amount)
    for mask, m in zip(ours, pruned):
        assert mask.dtype == m.weight.dtype and torch.equal(mask, m.weight_mask)


def test_global_masks_remove_exactly_k_even_with_ties():
    weights = [torch.tensor([0.0, 0.0, 1.0, 2.0]), torch.tensor([[0.0, 3.0], [1.0, 0.0]])]  # four zeros
    masks = global_magnitude_masks(weights, 0.25)  # k = 2 of 8
    assert sum(int((m == 0).sum()) for m in masks) == 2
    assert all(bool(((w == 0) | (m == 1)).all()) for w, m in zip(weights, masks)), "only zeros are removed"


def test_global_masks_leave_the_weights_alone():
    w = torch.randn(5, 5, requires_grad=True)
    before = w.detach().clone()
    (mask,) = global_magnitude_masks([w], 0.4)
    assert not mask.requires_grad and torch.equal(w.detach(), before)


@pytest.mark.parametrize("weights, amount, error, says", [
    ([torch.ones(3)], 1.5, ValueError, r"\[0, 1\]"), ([torch.ones(3)], -0.1, ValueError, r"\[0, 1\]"),
    ([torch.ones(3)], True, ValueError, r"\[0, 1\]"), ([torch.ones(3)], "half", ValueError, r"\[0, 1\]"),
    ([], 0.5, ValueError, "empty"), (torch.ones(3), 0.5, TypeError, "list of tensors"),
    ([torch.ones(3), nn.Linear(2, 2)], 0.5, TypeError, "Linear")])
def test_global_masks_refuse_bad_input(weights, amount, error, says):
    with pytest.raises(error, match=says):
        global_magnitude_masks(weights, amount)


# ---------------------------------------------------------------- bit mask + values

@pytest.mark.parametrize("shape", [(16, 24), (5, 3, 3, 3), (7,), (1,), (2, 0)])
def test_packed_bits_are_numpys_packbits_and_unpack_gives_the_tensor_back(shape):
    w = torch.randn(shape, generator=gen(1))
    w[torch.rand(shape, generator=gen(2)) < 0.6] = 0
    packed = pack_sparse(w)
    expected_bits = np.packbits((w != 0).flatten().numpy(), bitorder="little")
    assert packed["shape"] == shape and packed["bits"].dtype == torch.uint8
    assert np.array_equal(packed["bits"].numpy(), expected_bits)
    assert torch.equal(packed["values"], w[w != 0])
    assert torch.equal(unpack_sparse(packed), w)


def test_packing_a_parameter_and_extreme_sparsities():
    p = nn.Parameter(torch.randn(3, 8))
    assert not pack_sparse(p)["values"].requires_grad
    assert pack_sparse(torch.zeros(3, 8))["bits"].tolist() == [0, 0, 0]
    assert pack_sparse(torch.ones(3, 8))["bits"].tolist() == [255, 255, 255]
    half = pack_sparse(torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 2.0]))
    assert half["bits"].tolist() == [1, 2] and half["values"].tolist() == [1.0, 2.0]


def test_pack_and_unpack_refuse_bad_input():
    with pytest.raises(TypeError, match="pass the layer's .weight"):
        pack_sparse(nn.Linear(3, 3))
    with pytest.raises(TypeError, match="tensor"):
        pack_sparse([1.0, 0.0])
    good = pack_sparse(torch.tensor([1.0, 0.0, 3.0]))
    with pytest.raises(TypeError, match="dict"):
        unpack_sparse(torch.ones(3))
    with pytest.raises(ValueError, match="values"):
        unpack_sparse({**good, "values": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="bytes"):
        unpack_sparse({**good, "shape": (3, 3)})
    with pytest.raises(ValueError, match="padding"):
        unpack_sparse({**good, "bits": torch.tensor([5 + 128], dtype=torch.uint8), "values": torch.ones(3)})


# ---------------------------------------------------------------- one conv + BN pair without k channels

def pair(seed=0, bias=False, **conv_options):
    torch.manual_seed(seed)
    conv, bn = nn.Conv2d(3, 8, 3, bias=bias, **conv_options), nn.BatchNorm2d(8)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    return conv, bn.eval()


@pytest.mark.parametrize("options", [{}, {"bias": True, "stride": 2, "padding": 1}, {"dilation": 2, "padding": 2},
                                     {"padding": 1, "padding_mode": "reflect"}])
@pytest.mark.parametrize("k", [0, 3, 7])
def test_the_smaller_pair_computes_the_kept_channels_exactly(options, k):
    conv, bn = pair(**options)
    before = copy.deepcopy((conv, bn))
    small_conv, small_bn = remove_channels(conv, bn, k)
    keep = conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:8 - k].sort().values
    x = torch.randn(2, 3, 11, 11)
    with torch.no_grad():
        torch.testing.assert_close(small_bn(small_conv(x)), bn(conv(x))[:, keep])
    assert small_conv.out_channels == small_bn.num_features == 8 - k
    assert (small_conv.stride, small_conv.padding, small_conv.dilation, small_conv.padding_mode) == \
        (conv.stride, conv.padding, conv.dilation, conv.padding_mode)
    assert small_bn.eps == bn.eps and small_bn.momentum == bn.momentum and not small_bn.training
    assert all(torch.equal(a, b) for a, b in zip(before[0].state_dict().values(), conv.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(before[1].state_dict().values(), bn.state_dict().values()))


def test_removing_channels_of_one_pair_is_what_prune_channels_does_to_it():
    conv, bn = pair(1)
    whole = prune_channels(nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(8, 4, 1)), 0.5)
    small_conv, small_bn = remove_channels(conv, bn, 4)
    assert torch.equal(small_conv.weight, whole[0].weight) and torch.equal(small_bn.running_var, whole[1].running_var)


@pytest.mark.parametrize("args, error, says", [
    ((nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), 8), ValueError, "at least one channel"),
    ((nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), -1), ValueError, "integer from 0 to 7"),
    ((nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), 2.0), ValueError, "integer"),
    ((nn.Conv2d(3, 8, 3), nn.BatchNorm2d(6), 2), ValueError, "6 channels"),
    ((nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8), 2), TypeError, "groups"),
    ((nn.Linear(3, 8), nn.BatchNorm2d(8), 2), TypeError, "Conv2d"),
    ((nn.Conv2d(3, 8, 3), nn.BatchNorm1d(8), 2), TypeError, "BatchNorm2d")])
def test_remove_channels_refuses_bad_input(args, error, says):
    with pytest.raises(error, match=says):
        remove_channels(*args)
