"""Notebook 12's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
from exercise_checks import assert_check_catches

from helpers.exercises import check


def _groups(w, bits, group_size):
    if not 2 <= bits <= 8:
        raise ValueError("bits")
    rows, cols = w.shape
    g = cols if group_size is None else group_size
    if cols % g:
        raise ValueError("group_size")
    return w.reshape(rows, cols // g, g)


def scale_kept_in_fp32(w, bits, group_size):
    """Everything right but the scale left in float32: the file stores fp16, so the weights it holds differ."""
    x = _groups(w, bits, group_size)
    lo, hi = x.amin(-1, keepdim=True).clamp(max=0), x.amax(-1, keepdim=True).clamp(min=0)
    s = ((hi - lo) / (2 ** bits - 1)).clamp(min=torch.finfo(torch.float32).eps)
    z = torch.round(-lo / s)
    return ((torch.clamp(torch.round(x / s) + z, 0, 2 ** bits - 1) - z) * s).reshape(w.shape)


def one_range_per_row(w, bits, group_size):
    """The groups checked, but the range taken over the whole row: per-channel quantization whatever group_size."""
    _groups(w, bits, group_size)
    lo, hi = w.amin(1, keepdim=True).clamp(max=0), w.amax(1, keepdim=True).clamp(min=0)
    s = ((hi - lo) / (2 ** bits - 1)).clamp(min=torch.finfo(torch.float32).eps).half().float()
    z = torch.round(-lo / s)
    return (torch.clamp(torch.round(w / s) + z, 0, 2 ** bits - 1) - z) * s


def high_nibble_first(q):
    """The pairs packed the other way round: the first code in the high four bits."""
    if q.shape[-1] % 2 or q.min() < 0 or q.max() > 15:
        raise ValueError("codes")
    q = q.to(torch.uint8)
    return (q[..., 0::2] << 4) | q[..., 1::2]


def error_not_divided_by_the_diagonal(W, U, i, quantize):
    """e = W[:, i] - r, without / U[i, i]: the update is too small by the factor U[i, i]."""
    W = W.clone()
    r = quantize(W[:, i])
    e = W[:, i] - r
    W[:, i] = r
    W[:, i + 1:] -= e[:, None] * U[i, i + 1:][None, :]
    return W


def error_after_the_overwrite(W, U, i, quantize):
    """Column i overwritten before the error is taken: the error is always 0 and nothing is compensated."""
    W = W.clone()
    W[:, i] = quantize(W[:, i])
    e = (W[:, i] - quantize(W[:, i])) / U[i, i]
    W[:, i + 1:] -= e[:, None] * U[i, i + 1:][None, :]
    return W


def exponents_swapped(act_max, weight_max, alpha=0.5):
    """max|X|^(1 - alpha) / max|W|^alpha: the two powers swapped (the same at alpha = 0.5, wrong elsewhere)."""
    if not 0 <= alpha <= 1:
        raise ValueError("alpha")
    return (act_max.pow(1 - alpha) / weight_max.clamp(min=1e-5).pow(alpha)).clamp(min=1e-5)


WRONG = {"12.1": scale_kept_in_fp32, "12.2": high_nibble_first, "12.3": error_not_divided_by_the_diagonal,
         "12.4": exponents_swapped}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong, case", [("12.1", one_range_per_row, "case 1 of"),
                                              ("12.3", error_after_the_overwrite, "case 1 of")])
def test_other_mistakes_fail_where_expected(key, wrong, case, capsys):
    check(key, wrong)
    out = capsys.readouterr().out
    assert out.startswith(f"❌ {case}"), out


@pytest.mark.parametrize("key, wrong", [("12.5", 1024 * 256 // 2),                    # scales and zeros forgotten
                                        ("12.5", 1024 * 256 // 2 + 4096 * 2 + 4096 * 2),  # zeros as fp16
                                        ("12.6", 8 * 4 * 256 * 2 * 256),              # keys only, no values
                                        ("12.6", 2 * 4 * 256 * 2 * 256)])             # the batch forgotten
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
