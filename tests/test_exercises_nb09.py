"""Notebook 09's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
import torch.nn.functional as F
from exercise_checks import assert_check_catches
from torch import nn

from helpers import RepVGGBlock
from helpers.compress import fold_bn
from helpers.exercises import check


def _checked(conv, bn):
    if not isinstance(conv, nn.Conv2d) or not isinstance(bn, nn.BatchNorm2d):
        raise TypeError("conv, bn")
    if bn.num_features != conv.out_channels:
        raise ValueError("channels")


def fold_without_groups(conv, bn):
    """The folded conv rebuilt from in/out channels and kernel size only: groups, stride, dilation dropped."""
    _checked(conv, bn)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
    folded.weight.data = (conv.weight * scale[:, None, None, None]).detach()
    folded.bias.data = (scale * (bias - bn.running_mean) + bn.bias).detach()
    return folded


def fold_with_fixed_eps(conv, bn):
    """eps written as 1e-5 instead of read from the BN."""
    _checked(conv, bn)
    folded = fold_bn(conv, bn)
    scale = bn.weight / torch.sqrt(bn.running_var + 1e-5)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded.weight.data = (conv.weight * scale[:, None, None, None]).detach()
    folded.bias.data = (scale * (bias - bn.running_mean) + bn.bias).detach()
    return folded


def _repvgg_branches(block, with_identity=True):
    if not isinstance(block, RepVGGBlock):
        raise TypeError("block")
    branches = [fold_bn(*block.conv3), fold_bn(*block.conv1)]
    if with_identity and block.identity is not None:
        c = block.identity.num_features
        identity = nn.Conv2d(c, c, 1, bias=False)
        identity.weight.data = torch.eye(c)[:, :, None, None]
        branches.append(fold_bn(identity, block.identity))
    return branches


def _one_conv(block, weight, bias):
    conv = block.conv3[0]
    merged = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, padding=1)
    merged.weight.data, merged.bias.data = weight.detach(), bias.detach()
    return nn.Sequential(merged, nn.ReLU())


def repvgg_padded_in_a_corner(block):
    """The 1x1 kernels padded to 3x3 at the top left (F.pad(w, [0, 2, 0, 2])) instead of in the centre."""
    branches = _repvgg_branches(block)
    weight = sum(F.pad(b.weight, [0, 2, 0, 2]) if b.kernel_size == (1, 1) else b.weight for b in branches)
    return _one_conv(block, weight, sum(b.bias for b in branches))


def repvgg_without_identity(block):
    """The identity branch forgotten: only the 3x3 and 1x1 convs summed."""
    branches = _repvgg_branches(block, with_identity=False)
    weight = sum(F.pad(b.weight, [1, 1, 1, 1]) if b.kernel_size == (1, 1) else b.weight for b in branches)
    return _one_conv(block, weight, sum(b.bias for b in branches))


def _pool_conv(pool, conv, divisor):
    if not isinstance(pool, nn.AvgPool2d) or not isinstance(conv, nn.Conv2d):
        raise TypeError("pool, conv")
    k = pool.kernel_size if isinstance(pool.kernel_size, int) else pool.kernel_size[0]
    if pool.stride not in (1, (1, 1)) or pool.padding not in (k // 2, (k // 2, k // 2)) or conv.kernel_size != (1, 1):
        raise ValueError("shape")
    merged = nn.Conv2d(conv.in_channels, conv.out_channels, k, padding=k // 2)
    merged.weight.data = conv.weight.detach().expand(-1, -1, k, k) / divisor(k)
    merged.bias.data = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
    return merged


def pool_border_rule_forgotten(pool, conv):
    """Right for count_include_pad=True, but builds a conv for count_include_pad=False too (wrong on the border)."""
    return _pool_conv(pool, conv, lambda k: k * k)


def pool_divided_by_9(pool, conv):
    """W / 9 hard-coded: right for a 3x3 pool only."""
    if not pool.count_include_pad:
        raise ValueError("count_include_pad")
    return _pool_conv(pool, conv, lambda k: 9)


WRONG = {"09.1": fold_without_groups, "09.2": repvgg_padded_in_a_corner, "09.3": pool_border_rule_forgotten}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong, case, words", [
    ("09.1", fold_without_groups, 4, "groups"),            # the depthwise case says what differs
    ("09.1", fold_with_fixed_eps, 3, "value differs"),
    ("09.2", repvgg_without_identity, 1, "value differs"),
    ("09.3", pool_border_rule_forgotten, 4, "should raise ValueError"),
    ("09.3", pool_divided_by_9, 2, "value differs"),
])
def test_each_mistake_is_named_by_its_case(key, wrong, case, words, capsys):
    check(key, wrong)
    out = capsys.readouterr().out
    assert out.startswith(f"❌ case {case} of") and words in out, out


def test_returning_the_block_itself_is_not_a_merge(capsys):
    check("09.2", lambda block: block)
    out = capsys.readouterr().out
    assert out.startswith("❌ case 1 of") and "one Conv2d" in out, out


@pytest.mark.parametrize("key, wrong", [("09.4", 9 * 64 * 64 + 64 * 64 + 3 * 2 * 64),  # the merged block forgotten
                                        ("09.5", 128 * 64 * 3 * 3),                    # one output position
                                        ("09.6", 36 / 9)])                             # biases left out
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
