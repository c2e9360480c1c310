"""Notebook 01's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
from exercise_checks import assert_check_catches

from helpers.exercises import check


def _size_without_dilation(n, k, stride=1, padding=0, dilation=1):
    """Forgets the dilation: the kernel counted as k pixels wide."""
    if stride < 1 or dilation < 1 or padding < 0 or n + 2 * padding < dilation * (k - 1) + 1:
        raise ValueError("bad input")
    return (n + 2 * padding - k) // stride + 1


def _dilate_with_a_trailing_gap(weight, d):
    """A k*d-wide kernel: d - 1 zeros after the last tap too."""
    if weight.dim() != 4 or d < 1:
        raise ValueError("bad input")
    c_out, c_in, kh, kw = weight.shape
    spread = weight.new_zeros(c_out, c_in, kh * d, kw * d)
    spread[:, :, ::d, ::d] = weight
    return spread


def _field_with_own_stride_first(layers):
    """Applies a layer's own stride before adding its kernel: every strided layer counted too wide."""
    field, jump = 1, 1
    for layer in layers:
        if len(layer) != 3 or min(layer) < 1:
            raise ValueError("bad layer")
        k, d, s = layer
        jump *= s
        field += d * (k - 1) * jump
    return field


WRONG = {"01.1": _size_without_dilation, "01.2": _dilate_with_a_trailing_gap, "01.3": _field_with_own_stride_first}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_a_wrong_number_fails(capsys):
    check("01.4", 25 * 25)  # the whole receptive field: the gridding forgotten
    assert capsys.readouterr().out.startswith("❌")
