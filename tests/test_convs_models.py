import pytest
import torch
from torch import nn

from helpers import BLOCK_TYPES, check_groups, count_params, small_net, valid_groups


def test_valid_groups_are_the_common_divisors():
    assert valid_groups(128, 256) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert valid_groups(12, 18) == [1, 2, 3, 6]
    assert valid_groups(7, 5) == [1]


def test_every_valid_group_count_builds_a_conv_and_no_other_does():
    for groups in range(1, 19):
        ok = groups in valid_groups(12, 18)
        try:
            nn.Conv2d(12, 18, 3, groups=groups)
            built = True
        except ValueError:
            built = False
        assert ok == built, groups


def test_check_groups_says_what_would_work():
    assert check_groups(128, 256, 2) == 2
    with pytest.raises(ValueError, match=r"groups=4 does not work with 6 input and 30 output.*\[1, 2, 3, 6\]"):
        check_groups(6, 30, 4)
    with pytest.raises(ValueError, match="in_channels"):
        valid_groups(0, 4)
    with pytest.raises(ValueError, match="out_channels"):
        valid_groups(4, 2.5)


@pytest.mark.parametrize("block", BLOCK_TYPES)
def test_small_net_of_every_block_classifies_28x28_images(block):
    net = small_net(block)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert count_params(small_net(block, width=2.0)) > count_params(net) > count_params(small_net(block, width=0.5))


def test_small_net_rejects_bad_choices():
    with pytest.raises(ValueError, match="unknown block 'vgg'"):
        small_net("vgg")
    with pytest.raises(ValueError, match="width"):
        small_net("plain", width=0)


def test_tree_net_is_the_documented_size_and_its_blocks_run():
    from helpers import RepVGGBlock, tree_net

    net = tree_net().eval()
    assert count_params(net) == 285_922
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert RepVGGBlock(4, 4)(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6)
    assert RepVGGBlock(4, 8, stride=2).identity is None, "no identity branch when the shape changes"
