"""Notebook 07's exercise checks fail on a wrong answer (one plausible mistake each)."""
import pytest
import torch
import torch.nn.functional as F
from exercise_checks import assert_check_catches

from helpers.exercises import check


def _valid(T, alpha=0.5, student=None, teacher=None):
    """The bad-input checks the wrong answers below get right (so that each fails for its own mistake)."""
    if not T > 0 or not 0 <= alpha <= 1 or (student is not None and student.shape != teacher.shape):
        raise ValueError("bad input")


def exp_over_sum(logits, T):
    """The formula as written, exp(z / T) / sum exp(z / T): exp overflows to inf for large logits, inf / inf = nan."""
    _valid(T)
    e = torch.exp(logits / T)
    return e / e.sum(dim=-1, keepdim=True)


def over_the_batch(logits, T):
    """Softmax over dimension 0 (the images) instead of the last one (the classes)."""
    _valid(T)
    return torch.softmax(logits / T, dim=0)


def without_T_squared(student_logits, teacher_logits, labels, T, alpha):
    """Hinton's loss without the T² factor: the soft term comes out T² times too light."""
    _valid(T, alpha, student_logits, teacher_logits)
    soft = F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="batchmean")
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def default_reduction(student_logits, teacher_logits, labels, T, alpha):
    """F.kl_div's default reduction, 'mean': the soft term divided by the number of classes too."""
    _valid(T, alpha, student_logits, teacher_logits)
    p, log_q = F.softmax(teacher_logits / T, 1), F.log_softmax(student_logits / T, 1)
    soft = (p * (torch.log_softmax(teacher_logits / T, 1) - log_q)).mean()
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def log_of_softmax(student_logits, teacher_logits, labels, T, alpha):
    """Right in general, but log(softmax(...)) of a probability that underflowed to 0 gives 0 x -inf = nan."""
    _valid(T, alpha, student_logits, teacher_logits)
    p, log_q = F.softmax(teacher_logits / T, 1), F.log_softmax(student_logits / T, 1)
    soft = (p * (p.log() - log_q)).sum(1).mean()
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


def no_shape_check(student_logits, teacher_logits, labels, T, alpha):
    """Checks T and alpha but not the shapes: 5 teacher classes against 10 student classes slip through."""
    _valid(T, alpha)
    soft = F.kl_div(F.log_softmax(student_logits / T, 1)[:, :teacher_logits.shape[1]],
                    F.log_softmax(teacher_logits / T, 1), reduction="batchmean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * F.cross_entropy(student_logits, labels)


WRONG = {"07.1": exp_over_sum, "07.2": without_T_squared}
MORE_WRONG = [("07.1", over_the_batch), ("07.2", default_reduction), ("07.2", log_of_softmax),
              ("07.2", no_shape_check)]


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")
@pytest.mark.parametrize("key, wrong", MORE_WRONG, ids=[fn.__name__ for _, fn in MORE_WRONG])
def test_other_usual_mistakes_fail_too(key, wrong, capsys):
    assert_check_catches(key, wrong, capsys)


def test_the_loss_of_a_confident_teacher_names_the_nan(capsys):
    check("07.2", log_of_softmax)
    out = capsys.readouterr().out
    assert "0 x log 0" in out and "nan" in out


@pytest.mark.parametrize("key, wrong", [("07.3", 0.0),    # "the probabilities go to 0"
                                        ("07.3", 1.0),    # "the top class keeps everything"
                                        ("07.4", 0.002),  # divided by 10 instead of multiplied
                                        ("07.4", 0.02)])  # "the same number"
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")
