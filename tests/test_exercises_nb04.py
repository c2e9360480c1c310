"""Notebook 04's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
from exercise_checks import assert_check_catches
from torch import nn

from helpers.exercises import check


class Residual(nn.Module):
    """x + body(x), as notebook 04 defines it."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Gate(nn.Module):
    """x * body(x), as notebook 04 defines it."""

    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x * self.body(x)


def _inverted(c_in, c_out, stride=1, expand=6, *, last=None, shortcut=None, always_expand=False):
    if stride not in (1, 2) or expand < 1:
        raise ValueError("bad size")
    wide = c_in * expand
    layers = [nn.Conv2d(c_in, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.ReLU6()] \
        if expand != 1 or always_expand else []
    layers += [nn.Conv2d(wide, wide, 3, stride, 1, groups=wide, bias=False), nn.BatchNorm2d(wide), nn.ReLU6(),
               nn.Conv2d(wide, c_out, 1, bias=False), nn.BatchNorm2d(c_out), *([last] if last else [])]
    block = nn.Sequential(*layers)
    use_shortcut = (stride == 1 and c_in == c_out) if shortcut is None else shortcut(c_in, c_out, stride)
    return Residual(block) if use_shortcut else block


def relu6_after_projection(c_in, c_out, stride=1, expand=6):
    """A ReLU6 after the projection too: the non-linear bottleneck that MobileNet V2 leaves out."""
    return _inverted(c_in, c_out, stride, expand, last=nn.ReLU6())


def shortcut_whenever_stride_1(c_in, c_out, stride=1, expand=6):
    """The shortcut at stride 1 even when the channels change: x + y of different shapes."""
    return _inverted(c_in, c_out, stride, expand, shortcut=lambda c_in, c_out, stride: stride == 1)


def shortcut_whenever_same_channels(c_in, c_out, stride=1, expand=6):
    """The shortcut when the channels agree, even at stride 2: x + y of different map sizes."""
    return _inverted(c_in, c_out, stride, expand, shortcut=lambda c_in, c_out, stride: c_in == c_out)


def expansion_at_t_1(c_in, c_out, stride=1, expand=6):
    """An expansion conv even when expand = 1: c_in * c_in + 2 * c_in parameters too many."""
    return _inverted(c_in, c_out, stride, expand, always_expand=True)


def _excite(c, reduction=16, *, bias=True, gate=nn.Sigmoid):
    if reduction < 1 or c // reduction < 1:
        raise ValueError("no squeezed channel")
    s = c // reduction
    return Gate(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, s, 1, bias=bias), nn.ReLU(),
                              nn.Conv2d(s, c, 1, bias=bias), gate()))


def relu_for_sigmoid(c, reduction=16):
    """A ReLU where the sigmoid goes: the scale is no longer between 0 and 1."""
    return _excite(c, reduction, gate=nn.ReLU)


def no_bias(c, reduction=16):
    """bias=False out of habit (there is no BN after these convolutions to supply the shift)."""
    return _excite(c, reduction, bias=False)


def hits_over_n_times_k(logits, labels, k=1):
    """Counts the matches among the N * k guesses: a share of guesses, not of images (top-k / k)."""
    if not 1 <= k <= logits.shape[1] or len(labels) != len(logits):
        raise ValueError("bad k or labels")
    return (logits.topk(k, dim=1).indices == labels[:, None]).float().mean().item()


def lowest_k(logits, labels, k=1):
    """The k lowest logits (topk(largest=False), or argsort without descending=True)."""
    if not 1 <= k <= logits.shape[1] or len(labels) != len(logits):
        raise ValueError("bad k or labels")
    return (logits.argsort(dim=1)[:, :k] == labels[:, None]).any(dim=1).float().mean().item()


WRONG = {"04.1": relu6_after_projection, "04.2": relu_for_sigmoid, "04.3": hits_over_n_times_k}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong, says", [
    ("04.1", relu6_after_projection, "case 1 of 8 (32 -> 32 channels"),
    ("04.1", shortcut_whenever_stride_1, "case 3 of 8 (24 -> 32 channels, stride 1"),
    ("04.1", shortcut_whenever_same_channels, "case 4 of 8 (16 -> 16 channels, stride 2"),
    ("04.1", expansion_at_t_1, "case 5 of 8 (32 -> 16 channels, expand = 1 as"),
    ("04.2", no_bias, "parameters, expected"),
    ("04.3", lowest_k, "case 1 of 9"),
])
def test_each_mistake_is_named_by_its_case(key, wrong, says, capsys):
    check(key, wrong)
    out = capsys.readouterr().out
    assert out.startswith("❌") and says in out, out


def test_a_block_in_another_order_is_told_to_keep_the_docstrings_order(capsys):
    def fc2_first(c, reduction=16):  # the same parameters, another layer order: fc2 before fc1 in the state_dict
        s = c // reduction
        if s < 1:
            raise ValueError("no squeezed channel")
        block = nn.Module()
        block.fc2, block.fc1 = nn.Conv2d(s, c, 1), nn.Conv2d(c, s, 1)
        block.forward = lambda x: x * torch.sigmoid(block.fc2(torch.relu(block.fc1(x.mean((2, 3), keepdim=True)))))
        return block

    check("04.2", fc2_first)
    out = capsys.readouterr().out
    assert out.startswith("❌") and "docstring's order" in out, out


@pytest.mark.parametrize("key, wrong", [("04.4", 256 * 256 * 9),                 # one 3x3 on 256 channels
                                        ("04.4", 256 * 64 + 64 * 64 + 64 * 256),  # the 3x3 counted as a 1x1
                                        ("04.5", 3 * 3 / 7),                      # kernel sizes, not their areas
                                        ("04.5", 9 / 49)])                        # one 3x3 only
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
