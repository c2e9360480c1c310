"""The exercise checks: each case reported in one line, expected values kept in helpers, challenges recorded."""
import json

import pytest
import torch

from helpers import exercises
from helpers.exercises import NOT_YET_DONE, Case, check, difference, exercise, yours_or_reference
from helpers.exercises import challenges


def reference_scale(x, factor):
    if not isinstance(factor, (int, float)) or factor <= 0:
        raise ValueError("factor must be > 0")
    return x * factor


@pytest.fixture(autouse=True)
def registered():
    """Exercise 99.1 (build it: scale a tensor) and 99.2 (work it out: 6 x 7), for these tests only."""
    exercise("99.1", "scale a tensor", reference=reference_scale, hint="Multiply every entry.")(lambda: [
        Case("a vector times 2", (torch.arange(4.0), 2)),
        Case("a matrix times 0.5", (torch.ones(2, 3), 0.5)),
        Case("a factor of 0 is refused", (torch.ones(2), 0), raises=ValueError),
    ])
    exercise("99.2", "six times seven", expected=lambda: 42)
    yield
    for key in ("99.1", "99.2"):
        exercises.EXERCISES.pop(key, None)


def test_a_function_is_run_on_every_case(capsys):
    check("99.1", reference_scale)
    assert capsys.readouterr().out.startswith("✅ passes all 3 cases")


@pytest.mark.parametrize("wrong, says", [
    (lambda x, f: x + f, "case 1 of 3 (a vector times 2): value differs at 3 of 4 entries"),
    (lambda x, f: (x * f).double(), "case 1 of 3 (a vector times 2): dtype float64, expected float32"),
    (lambda x, f: (x * f).flatten()[:1], "shape (1,), expected (4,)"),
    (lambda x, f: x * f, "case 3 of 3 (a factor of 0 is refused): should raise ValueError, but returned a tensor"),
    (lambda x, f: x.missing, "case 1 of 3 (a vector times 2): raised AttributeError"),
])
def test_a_wrong_function_is_told_which_case_fails_and_how(capsys, wrong, says):
    check("99.1", wrong)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("❌") and says in out


def test_an_open_exercise_is_not_yet_done(capsys):
    def scale(x, factor):
        ...

    check("99.1", scale)
    check("99.2", ...)
    assert capsys.readouterr().out == (NOT_YET_DONE + "\n") * 2


def test_a_value_is_compared_without_showing_it(capsys):
    check("99.2", 42)
    check("99.2", 41)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "✅ correct: 42" and out[1].startswith("❌ not quite") and "42" not in out[1]


def test_required_raises_and_unknown_keys_are_named():
    with pytest.raises(AssertionError, match="exercise 99.2"):
        check("99.2", 41, required=True)
    with pytest.raises(AssertionError, match="not yet done"):
        check("99.1", lambda x, f: None, required=True)
    with pytest.raises(KeyError, match="no exercise 99.7"):
        check("99.7", 1)


def test_yours_or_reference_says_which_it_uses(capsys):
    def scale(x, factor):
        ...

    assert yours_or_reference("99.1", scale) is reference_scale
    assert yours_or_reference("99.1", reference_scale) is reference_scale
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("using the course's reference scale") and out[1].startswith("using your reference_scale")


def test_difference_reads_nested_answers():
    assert difference((torch.ones(2), 3), (torch.ones(2), 3)) is None
    assert difference((torch.ones(2), 3), (torch.ones(2), 4)) == "item 1: returned 3, expected another value"
    assert difference({"a": torch.zeros(1)}, {"a": torch.ones(1)}).startswith("['a']: value differs")
    assert difference("x", 2) == "returned 'x', expected a number"


def test_the_old_form_still_works(capsys):
    check(..., 4)
    check(4, 4)
    check(5, 4, hint="Count again.")
    out = capsys.readouterr().out.splitlines()
    assert out == [NOT_YET_DONE, "✅ correct: 4", "❌ not quite: got 5. Count again."]


# ---------------------------------------------------------------- challenges

def test_a_challenge_records_every_attempt_and_the_best(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(challenges, "FAST", False)
    challenges.define("99", "small and accurate", measure=lambda m: {"accuracy": m["acc"], "size": m["size"]},
                      targets={"accuracy": (">=", 0.9), "size": ("<=", lambda: 10)}, score="size", higher_is_better=False)
    path = tmp_path / "challenges.json"
    assert not challenges.challenge("99", {"acc": 0.8, "size": 5}, path=path)["passed"]
    assert challenges.challenge("99", {"acc": 0.95, "size": 8}, path=path)["passed"]
    assert challenges.challenge("99", {"acc": 0.92, "size": 6}, note="pruned more", path=path)["passed"]
    assert challenges.challenge("99", {"acc": 0.99, "size": 7}, path=path)["passed"]
    record = json.loads(path.read_text())["99"]
    assert len(record["attempts"]) == 4 and record["best"]["size"] == 6 and record["best"]["note"] == "pruned more"
    assert "❌ accuracy: 0.8 (target >= 0.9)" in capsys.readouterr().out
    path.write_text("{not json")
    challenges.challenge("99", {"acc": 0.95, "size": 8}, path=path)
    assert (tmp_path / "challenges.json.bad").exists(), "an unreadable record is moved aside, never lost"
    with pytest.raises(KeyError, match="no challenge"):
        challenges.challenge("98", {}, path=path)
