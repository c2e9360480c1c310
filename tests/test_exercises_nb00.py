"""Notebook 00's exercise checks fail on a wrong answer (one plausible mistake each)."""
import statistics

import pytest
import torch
from exercise_checks import assert_check_catches
from torch import nn

from helpers.exercises import check


def _macs_without_groups(conv, input_shape):
    """Forgets the groups: every filter counted as if it saw all C_in channels."""
    n, c, h, w = input_shape
    if c != conv.in_channels:
        raise ValueError("channels")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    h_out, w_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError("no output")
    return n * conv.out_channels * h_out * w_out * conv.in_channels * kh * kw


def _calls_of_every_module(model, *inputs):
    """Hooks on every module, containers included: a Sequential's own call is counted too."""
    if not isinstance(model, nn.Module):
        raise TypeError("not a module")
    calls = []
    handles = [m.register_forward_hook(lambda module, args, output: calls.append((module, output.numel())))
               for m in model.modules()]
    with torch.no_grad():
        model(*inputs)
    for handle in handles:
        handle.remove()
    return calls


def _mean_and_iqr(times):
    """The mean instead of the median: one slow call drags it."""
    if not times or min(times) < 0:
        raise ValueError("bad times")
    if len(times) < 2:
        return times[0], 0.0
    q1, _, q3 = statistics.quantiles(times, n=4)
    return sum(times) / len(times), q3 - q1


WRONG = {"00.1": _macs_without_groups, "00.2": _calls_of_every_module, "00.3": _mean_and_iqr}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_hooks_left_behind_are_caught(capsys):
    def leaves_its_hooks(model, *inputs):
        if not isinstance(model, nn.Module):
            raise TypeError("not a module")
        calls = []
        for m in model.modules():
            if not list(m.children()):
                m.register_forward_hook(lambda module, args, output: calls.append((module, output.numel())))
        with torch.no_grad():
            model(*inputs)
        return calls

    check("00.2", leaves_its_hooks)
    assert "hooks are still attached" in capsys.readouterr().out


def test_a_wrong_number_fails(capsys):
    check("00.4", 32 * 32 * 3 * 3 + 64 * 32)  # the depthwise layer counted as a full 3x3 convolution
    assert capsys.readouterr().out.startswith("❌")
