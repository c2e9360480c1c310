"""Notebook 02's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
import torch.nn.functional as F
from exercise_checks import assert_check_catches
from torch import nn

from helpers import check_groups
from helpers.exercises import check


def strided_groups(x, weight, groups, padding=0):
    """Group j takes every g-th input channel (x[:, j::g]) instead of a block of consecutive ones."""
    check_groups(x.shape[1], weight.shape[0], groups)
    return torch.cat([F.conv2d(x[:, j::groups], w, padding=padding)
                      for j, w in enumerate(weight.chunk(groups, dim=0))], dim=1)


def full_depthwise(c_in, c_out, k=3, stride=1):
    """The "depthwise" conv without groups=c_in: a full k x k convolution, c_in times too many weights."""
    if k % 2 == 0:
        raise ValueError("k must be odd")
    return nn.Sequential(nn.Conv2d(c_in, c_in, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def no_middle_relu(c_in, c_out, k=3, stride=1):
    """The right layers and parameter count, but no ReLU between the depthwise and the pointwise part."""
    if k % 2 == 0:
        raise ValueError("k must be odd")
    return nn.Sequential(nn.Conv2d(c_in, c_in, k, stride, k // 2, groups=c_in, bias=False), nn.BatchNorm2d(c_in),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


WRONG = {"02.1": strided_groups, "02.2": full_depthwise}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_a_block_with_the_right_count_but_the_wrong_layers_fails(capsys):
    check("02.2", no_middle_relu)
    out = capsys.readouterr().out
    assert out.startswith("❌ case 1 of") and "right parameter count" in out and "output" in out


@pytest.mark.parametrize("key, wrong", [("02.3", 128 * 64 * 3 * 3),                # forgot to divide by g
                                        ("02.4", 1 / 5 ** 2),                      # forgot the pointwise part
                                        ("02.5", [1, 2, 3, 4, 6])])                # divisors of 12 only
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
