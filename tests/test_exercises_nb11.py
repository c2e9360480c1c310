"""Notebook 11's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
from exercise_checks import assert_check_catches

from helpers.exercises import check
from helpers.nas import layers

WRONG = {
    "11.1": lambda arch, ms: sum(ms.get(layer, 0.0) for layer in layers(arch)),  # a missing layer counted as free
    "11.2": lambda alive, score, rng, sample, mutate: (  # the worst member dies instead of the oldest
        (child := mutate(max(rng.sample(alive, sample), key=score), rng)),
        sorted(alive, key=score)[1:] + [child]),
    "11.3": lambda points: [i for i, p in enumerate(points)  # identical points knock each other out
                            if not any(q[0] <= p[0] and q[1] >= p[1] for j, q in enumerate(points) if j != i)],
}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_a_wrong_number_fails(capsys):
    check("11.4", (4 + 4 + 3 + 4) ** 2)  # added instead of multiplied
    assert capsys.readouterr().out.startswith("❌")
