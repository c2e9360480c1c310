"""Notebook 03's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
from exercise_checks import assert_check_catches

from helpers import check_groups
from helpers.exercises import check


def shuffle_the_other_way(x, groups):
    """Views the channels as (C // groups, groups) before transposing: that is the inverse shuffle."""
    n, c, h, w = x.shape
    check_groups(c, c, groups)
    return x.reshape(n, c // groups, groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def shuffle_again(x, groups):
    """Undoes a shuffle by shuffling again with the same groups (right only when C = groups ** 2)."""
    n, c, h, w = x.shape
    check_groups(c, c, groups)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def interleaved_groups(channels, groups):
    """Puts channel c in group c % groups (the shuffled layout) instead of c // (channels // groups)."""
    check_groups(channels, channels, groups)
    group = torch.arange(channels) % groups
    return (group[:, None] == group[None, :]).int()


WRONG = {"03.1": shuffle_the_other_way, "03.2": shuffle_again, "03.3": interleaved_groups}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_a_shuffle_written_with_view_fails_on_a_non_contiguous_input(capsys):
    def with_view(x, groups):
        n, c, h, w = x.shape
        check_groups(c, c, groups)
        return x.view(n, groups, c // groups, h * w).transpose(1, 2).reshape(n, c, h, w)

    check("03.1", with_view)
    out = capsys.readouterr().out
    assert out.startswith("❌") and "non-contiguous" in out


@pytest.mark.parametrize("key, wrong", [("03.4", [0, 4, 1, 5, 2, 6, 3, 7]),   # the inverse: 2 groups of 4
                                        ("03.5", 32),                          # one shuffle always mixes fully
                                        ("03.6", 6)])                          # floor(sqrt(40)): not a divisor of 40
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")


@pytest.mark.parametrize("key", ["03.4", "03.5", "03.6"])
def test_the_expected_values_are_the_ones_the_notebook_derives(key):
    from helpers.exercises import get
    assert get(key).expected() == {"03.4": [0, 2, 4, 6, 1, 3, 5, 7], "03.5": 16, "03.6": 5}[key]
