"""The references of notebooks 02 and 03's exercises (helpers.convs, helpers.shuffle): right, and clear on bad input."""
import pytest
import torch
from torch import nn

from helpers import count_params
from helpers.convs import depthwise_separable, grouped_conv
from helpers.shuffle import channel_shuffle, channel_unshuffle, group_connectivity


def test_grouped_conv_is_nn_conv2d_with_groups():
    x = torch.randn(2, 8, 5, 5)
    for g in (1, 2, 4, 8):
        conv = nn.Conv2d(8, 16, 3, padding=1, groups=g, bias=False)
        torch.testing.assert_close(grouped_conv(x, conv.weight, g, padding=1), conv(x))


@pytest.mark.parametrize("x, weight, groups, error, says", [
    (torch.randn(1, 8, 4, 4), torch.randn(6, 2, 3, 3), 4, ValueError, "does not work with 8 input and 6 output"),
    (torch.randn(1, 8, 4, 4), torch.randn(6, 8, 3, 3), 2, ValueError, "weight must be [C_out, 4, k, k]"),
    (torch.randn(8, 4, 4), torch.randn(8, 8, 3, 3), 1, ValueError, "[N, C_in, H, W]"),
    ([[1.0]], torch.randn(8, 8, 3, 3), 1, TypeError, "must be tensors"),
])
def test_grouped_conv_says_what_is_wrong(x, weight, groups, error, says):
    with pytest.raises(error) as raised:
        grouped_conv(x, weight, groups)
    assert says in str(raised.value)


def test_depthwise_separable_has_the_documented_layers_and_size():
    for c_in, c_out, k in ((32, 64, 3), (16, 16, 5), (8, 24, 1)):
        block = depthwise_separable(c_in, c_out, k)
        assert count_params(block) == c_in * k * k + 2 * c_in + c_in * c_out + 2 * c_out
        assert block(torch.randn(2, c_in, 9, 9)).shape == (2, c_out, 9, 9)
    assert block[0][0].groups == 8 and block[1][0].kernel_size == (1, 1)
    assert depthwise_separable(16, 32, stride=2)(torch.randn(1, 16, 9, 9)).shape == (1, 32, 5, 5)


@pytest.mark.parametrize("args, says", [((16, 32, 4), "k must be odd"), ((0, 32), "c_in must be a whole number"),
                                        ((16, 32.0), "c_out must be"), ((16, 32, 3, 0), "stride must be"),
                                        ((True, 32), "c_in must be")])
def test_depthwise_separable_refuses_bad_sizes(args, says):
    with pytest.raises(ValueError, match=says):
        depthwise_separable(*args)


def test_shuffle_is_pytorchs_and_unshuffle_undoes_it():
    x = torch.randn(2, 12, 3, 4)
    torch.testing.assert_close(channel_shuffle(x, 3), nn.ChannelShuffle(3)(x))
    for g in (1, 2, 3, 4, 6, 12):
        torch.testing.assert_close(channel_unshuffle(channel_shuffle(x, g), g), x)
        torch.testing.assert_close(channel_shuffle(channel_unshuffle(x, g), g), x)
    order = channel_shuffle(torch.arange(8).view(1, 8, 1, 1), 4).flatten().tolist()
    assert order == [0, 2, 4, 6, 1, 3, 5, 7]  # one channel from each group of 2 in turn


@pytest.mark.parametrize("fn", [channel_shuffle, channel_unshuffle])
@pytest.mark.parametrize("x, groups, error, says", [
    (torch.randn(1, 12, 2, 2), 5, ValueError, "Choose one of [1, 2, 3, 4, 6, 12]"),
    (torch.randn(1, 12, 2, 2), 0, ValueError, "groups=0 does not work"),
    (torch.randn(1, 12, 2, 2), 3.0, ValueError, "whole number"),
    (torch.randn(12, 2, 2), 3, ValueError, "[N, C, H, W]"),
    ([1, 2, 3], 3, TypeError, "must be a tensor"),
])
def test_shuffles_say_what_is_wrong(fn, x, groups, error, says):
    with pytest.raises(error) as raised:
        fn(x, groups)
    assert says in str(raised.value)


def test_group_connectivity_is_block_diagonal_and_checked():
    M = group_connectivity(6, 3)
    assert M.dtype == torch.int
    assert torch.equal(M, torch.block_diag(*[torch.ones(2, 2, dtype=torch.int)] * 3))
    assert torch.equal(group_connectivity(4, 1), torch.ones(4, 4, dtype=torch.int))
    assert torch.equal(group_connectivity(4, 4), torch.eye(4, dtype=torch.int))
    for groups in (5, 0, 2.0):
        with pytest.raises(ValueError):
            group_connectivity(12, groups)
