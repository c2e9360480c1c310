"""Notebook 08's exercise checks fail on a wrong answer (one plausible mistake each)."""
import math

import pytest
import torch
from exercise_checks import assert_check_catches
from torch import nn

from helpers.exercises import check


def _shares(singular_values, energy):
    if not 0 < energy <= 1:
        raise ValueError("energy must be in (0, 1]")
    return torch.cumsum(singular_values ** 2, 0) / (singular_values ** 2).sum()


def past_the_end(singular_values, energy):
    """1 + the ranks still below the share, in float32, without the cap: energy 1 can give len(s) + 1."""
    return int((_shares(singular_values, energy) < energy).sum()) + 1


def first_rank_above(singular_values, energy):
    """The first rank whose share is strictly above energy: a share reached exactly does not count."""
    return min(int((_shares(singular_values, energy) <= energy).sum()) + 1, len(singular_values))


def share_of_values(singular_values, energy):
    """The share of sum s instead of sum s² (energy is the squared Frobenius norm)."""
    return rank_of(torch.cumsum(singular_values, 0) / singular_values.sum(), energy)


def rank_of(shares, energy):
    if not 0 < energy <= 1:
        raise ValueError("energy must be in (0, 1]")
    return min(int((shares < energy).sum()) + 1, len(shares))


def _svd(linear, r):
    if not isinstance(linear, nn.Linear):
        raise TypeError("an nn.Linear, please")
    if not 1 <= r <= min(linear.weight.shape):
        raise ValueError("rank out of range")
    return torch.linalg.svd(linear.weight.detach(), full_matrices=False)


def without_S(linear, r):
    """Forgets the singular values: the first layer gets V_r^T alone, the output is no longer W_r x."""
    U, S, Vh = _svd(linear, r)
    first, second = nn.Linear(linear.in_features, r, bias=False), nn.Linear(r, linear.out_features, linear.bias is not None)
    first.weight.data, second.weight.data = Vh[:r].clone(), U[:, :r].clone()
    if linear.bias is not None:
        second.bias.data = linear.bias.detach().clone()
    return nn.Sequential(first, second)


def bias_twice(linear, r):
    """The right product, but a (zero) bias on the first layer too: r parameters that do nothing."""
    U, S, Vh = _svd(linear, r)
    first, second = nn.Linear(linear.in_features, r), nn.Linear(r, linear.out_features, linear.bias is not None)
    first.weight.data, second.weight.data = S[:r, None] * Vh[:r], U[:, :r].clone()
    first.bias.data.zero_()
    if linear.bias is not None:
        second.bias.data = linear.bias.detach().clone()
    return nn.Sequential(first, second)


def reshape_only(codebooks, codes):
    """Looks the codes up right, then reshapes [s, n, d] to [s*d, n] without bringing d before n."""
    s, k, d = codebooks.shape
    if len(codes) != s:
        raise ValueError("one row of codes per codebook")
    return codebooks[torch.arange(s)[:, None], codes.long()].reshape(s * d, -1)


WRONG = {"08.1": past_the_end, "08.2": without_S, "08.3": reshape_only}
MORE_WRONG = [("08.1", first_rank_above), ("08.1", share_of_values), ("08.2", bias_twice)]


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong", MORE_WRONG, ids=[fn.__name__ for _, fn in MORE_WRONG])
def test_other_usual_mistakes_fail_too(key, wrong, capsys):
    assert_check_catches(key, wrong, capsys)


def test_a_split_with_an_extra_bias_is_told_its_parameter_count(capsys):
    check("08.2", bias_twice)
    assert "parameters, expected" in capsys.readouterr().out


@pytest.mark.parametrize("key, wrong", [
    ("08.4", 512 * 4096 // (512 + 4096) + 1),               # the first rank that no longer saves, not the last that does
    ("08.4", 64 * (512 + 4096)),                            # the weights at some rank instead of the rank
    ("08.5", (1 ** 2 + 0.5 ** 2) / (5 ** 2 + 3 ** 2 + 1 ** 2 + 0.5 ** 2)),  # the squared error: no square root
    ("08.5", (1 + 0.5) / (5 + 3 + 1 + 0.5)),                # singular values, not their squares
    ("08.6", 28 * 28 * 32 * 64 * 5 * 5),                    # the full 5x5 convolution
    ("08.6", 28 * 28 * (32 * 5 * 24 + 24 * 5 * 64) // 2),   # as if the first conv halved the map
])
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")


def test_the_worked_numbers():
    from helpers.exercises import get

    assert get("08.4").expected() == 455
    assert math.isclose(get("08.5").expected(), math.sqrt(1.25 / 35.25))
    assert get("08.6").expected() == 28 * 28 * (32 * 5 * 24 + 24 * 5 * 64)
