"""Notebook 06's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
from exercise_checks import assert_check_catches

from helpers.exercises import check


def unwidened_params(x_min, x_max, bits=8):
    """The range is not widened to contain 0: a range of positive values gets a negative zero point."""
    if x_min > x_max:
        raise ValueError("x_min > x_max")
    scale = max((x_max - x_min) / (2 ** bits - 1), torch.finfo(torch.float32).eps)
    return scale, round(-x_min / scale)


def no_floor_on_the_scale(w, bits, per_channel=True):
    """max|w| / q_max with nothing to stop a channel of zeros from dividing 0 by 0 (NaN)."""
    if bits < 2:
        raise ValueError("bits")
    q_max = 2 ** (bits - 1) - 1
    max_abs = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) if per_channel else w.abs().max()
    scale = max_abs / q_max
    return torch.clamp(torch.round(w / scale), -q_max, q_max) * scale


def no_carry(M):
    """M0 = round(m * 2^31) without the carry: a mantissa that rounds up gives 2^31, which an int32 cannot hold."""
    if not ((M > 0) & (M < 1)).all():
        raise ValueError("0 < M < 1")
    mantissa, exponent = torch.frexp(M)
    return torch.round(mantissa.double() * 2 ** 31).long(), -exponent.long()


def zero_point_of_the_input_forgotten(q_x, z_x, q_w, q_b, M0, n, z_y, relu=False):
    """q_x @ q_w.T without subtracting z_x: every output shifted by z_x times the row sums of the weights."""
    if q_x.shape[-1] != q_w.shape[1]:
        raise ValueError("features")
    acc = q_x @ q_w.T + q_b
    shift = 31 + n
    return ((acc * M0 + (1 << (shift - 1))) >> shift).add(z_y).clamp(z_y if relu else 0, 255), acc


def relu_at_zero(q_x, z_x, q_w, q_b, M0, n, z_y, relu=False):
    """A fused ReLU that clamps at the integer 0 instead of z_y, the integer that stands for 0.0."""
    if q_x.shape[-1] != q_w.shape[1]:
        raise ValueError("features")
    acc = (q_x - z_x) @ q_w.T + q_b
    shift = 31 + n
    return ((acc * M0 + (1 << (shift - 1))) >> shift).add(z_y).clamp(0, 255), acc


WRONG = {"06.1": unwidened_params, "06.2": no_floor_on_the_scale, "06.3": no_carry,
         "06.4": zero_point_of_the_input_forgotten}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_a_relu_clamped_at_zero_fails_on_the_relu_case(capsys):
    check("06.4", relu_at_zero)
    out = capsys.readouterr().out
    assert out.startswith("❌ case 2 of") and "ReLU" in out and "q_y" in out


@pytest.mark.parametrize("key, wrong", [("06.5", 256 * 3136),                    # the scales forgotten
                                        ("06.6", 256 * 3136 * 4 // 8),            # the codebook forgotten
                                        ("06.7", 0.635 / 127)])                   # a whole step, not half
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
