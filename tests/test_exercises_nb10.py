"""Notebook 10's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
from exercise_checks import assert_check_catches
from torch import nn

from helpers.exercises import check


def _shape(linear, max_params, with_bias=True):
    if not isinstance(linear, nn.Linear):
        raise TypeError("linear")
    n, m = linear.in_features, linear.out_features
    biases = m if with_bias and linear.bias is not None else 0
    if max_params < n + m + biases:
        raise ValueError("budget")
    return n, m, biases


def rank_biases_forgotten(linear, max_params):
    """Only the weights r (in + out) counted: the second layer's biases are left out of the budget."""
    n, m, _ = _shape(linear, max_params, with_bias=False)
    return min(int(max_params // (n + m)), n, m)


def rank_not_capped(linear, max_params):
    """No cap at min(in, out): a generous budget asks for more singular values than the weight has."""
    n, m, biases = _shape(linear, max_params)
    return int((max_params - biases) // (n + m))


def _fits(table, max_bytes, max_ms, strict=False):
    table[["accuracy", "size_bytes", "latency_b1_ms"]]  # KeyError when a column is missing
    if strict:
        fits = table[(table["size_bytes"] < max_bytes) & (table["latency_b1_ms"] < max_ms)]
    else:
        fits = table[(table["size_bytes"] <= max_bytes) & (table["latency_b1_ms"] <= max_ms)]
    if fits.empty:
        raise ValueError("no step fits")
    return fits


def first_of_the_most_accurate(table, max_bytes, max_ms):
    """idxmax alone: of equally accurate steps it keeps the first, not the one with the smaller file."""
    return _fits(table, max_bytes, max_ms)["accuracy"].idxmax()


def strictly_below_the_budget(table, max_bytes, max_ms):
    """< instead of <=: a step exactly at the budget is refused."""
    fits = _fits(table, max_bytes, max_ms, strict=True)
    return fits.sort_values(["accuracy", "size_bytes"], ascending=[False, True]).index[0]


def smallest_file_that_fits(table, max_bytes, max_ms):
    """The smallest file instead of the most accurate step."""
    return _fits(table, max_bytes, max_ms)["size_bytes"].idxmin()


WRONG = {"10.1": rank_biases_forgotten, "10.2": first_of_the_most_accurate}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong, case", [
    ("10.1", rank_biases_forgotten, 1),
    ("10.1", rank_not_capped, 4),
    ("10.2", strictly_below_the_budget, 3),
    ("10.2", smallest_file_that_fits, 1),
    ("10.2", first_of_the_most_accurate, 5),
])
def test_each_mistake_is_named_by_its_case(key, wrong, case, capsys):
    check(key, wrong)
    out = capsys.readouterr().out
    assert out.startswith(f"❌ case {case} of"), out


def test_a_float_rank_is_refused(capsys):
    check("10.1", lambda linear, max_params: float(min((max_params - linear.out_features) // 1824, 256)))
    assert "expected an int" in capsys.readouterr().out


@pytest.mark.parametrize("key, wrong", [("10.3", 5 + 4),           # added instead of multiplied
                                        ("10.4", 2.0),             # the 30% left out
                                        ("10.4", 1 / 0.7)])
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
