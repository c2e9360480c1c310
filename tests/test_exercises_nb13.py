"""Notebook 13's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
from exercise_checks import assert_check_catches


def mask_not_shifted(q, keys, values):
    """The causal mask of a prefill (query i sees keys 0..i) used with a cache: the new queries miss the cache."""
    T, S = q.shape[2], keys.shape[2]
    if S < T:
        raise ValueError("keys")
    seen = torch.ones(T, S, dtype=torch.bool).tril()
    scores = (q @ keys.transpose(-2, -1) / q.shape[-1] ** 0.5).masked_fill(~seen, float("-inf"))
    return scores.softmax(-1) @ values


def four_of_eight(scores):
    """Half of each group of eight kept: 50% sparse, but not 2:4 (a group of four may keep three or none)."""
    if scores.shape[1] % 4:
        raise ValueError("rows")
    groups = scores.reshape(scores.shape[0], -1, 8)
    keep = groups.topk(4, dim=-1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(scores.shape)


def every_match_counts(proposed, verified):
    """Every guess that matches is kept, even after a mismatch: the text then differs from the target's."""
    if len(verified) != len(proposed) + 1:
        raise ValueError("lengths")
    agree = proposed == verified[:-1]
    n = int(agree.sum())
    return torch.cat([proposed[agree], verified[n:n + 1]])


WRONG = {"13.1": mask_not_shifted, "13.2": four_of_eight, "13.3": every_match_counts}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_the_bonus_byte_is_checked(capsys):
    from helpers.exercises import check

    def no_bonus(proposed, verified):
        if len(verified) != len(proposed) + 1:
            raise ValueError("lengths")
        n = int((proposed == verified[:-1]).long().cumprod(0).sum())
        return proposed[:n] if n == len(proposed) and n else torch.cat([proposed[:n], verified[n:n + 1]])

    check("13.3", no_bonus)
    out = capsys.readouterr().out
    assert out.startswith("❌ case 1 of"), out


def test_the_challenge_races_the_draft_against_greedy_and_checks_the_text(monkeypatch, tmp_path):
    from helpers import lm
    from helpers.exercises.challenges import challenge

    torch.manual_seed(0)
    target = lm.GPT(lm.GPTConfig(context=256, width=32, layers=2, heads=4)).eval()
    monkeypatch.setattr(lm, "trained_gpt", lambda: target)
    figures = challenge("13", (target, 3), note="test: the target as its own draft", path=tmp_path / "record.json")
    assert figures["same text as plain greedy"] == 1.0 and figures["acceptance"] == 1.0
    assert figures["speed-up vs greedy with the KV cache"] > 0 and (tmp_path / "record.json").exists()
    for bad in (target, (target, 2.5), (target, True), ("draft", 3)):
        with pytest.raises(TypeError, match=r"\(draft, k\)"):
            challenge("13", bad, path=tmp_path / "record.json")
