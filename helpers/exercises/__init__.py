"""Checks for the exercises: the student's code is run on several cases against the course's own answer.

Every exercise has a key, ``"NN.k"`` (notebook NN, exercise k), and one of two kinds:

* **build it**: the student writes a function (signature, docstring and a ``...`` body are given);
  ``check("05.1", global_magnitude_mask)`` runs it on ordinary, edge and bad-input cases against
  the reference (helpers' or PyTorch's own implementation) and says, in one line, which case fails
  and how (shape, dtype, value, or an error raised or not raised).
* **work it out**: the student computes a number; ``check("00.3", answer)`` compares it with the value
  helpers computes. The expected value is never written in the student's cell.

The cases and the expected values live in one module per notebook (``helpers/exercises/nb05.py``
holds notebook 05's), loaded when a check first asks for them. A check only prints, so a notebook
with open exercises still runs from top to bottom; the worked solutions call it with
``required=True``, which raises when the answer is wrong. :func:`yours_or_reference` lets later cells
use the student's function once it passes, and the reference until then.
"""
import copy
import importlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

NOT_YET_DONE = "⏳ not yet done: replace the ... with your answer and run the cell again."
KEY = re.compile(r"\d\d\.\d+")


@dataclass
class Case:
    """One call of the student's function: ``fn(*args, **kwargs)``.

    ``raises``: the error a correct function raises here (bad input); ``None`` when it must return
    what the reference returns. ``label`` says what the case is about, in the words a student reads
    when it fails ("amount = 0 keeps every weight").
    """

    label: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    raises: Any = None


@dataclass
class Exercise:
    key: str
    title: str
    reference: Callable = None  # build it: the course's function; work it out: None
    cases: Callable = None      # build it: () -> list of Case (built when first needed)
    expected: Callable = None   # work it out: () -> the value
    rel_tol: float = 1e-5
    abs_tol: float = 1e-6
    compare: Callable = None    # optional (got, want) -> None when they agree, else what differs
    hint: str = ""

    @property
    def builds(self):
        return self.reference is not None


EXERCISES = {}


def exercise(key, title, *, reference=None, expected=None, **options):
    """Register exercise ``key``: used as a decorator on the function that returns its cases (build it),
    or called with ``expected`` (work it out)."""
    if not KEY.fullmatch(key):
        raise ValueError(f"an exercise key is 'NN.k' (notebook, exercise), got {key!r}")

    def register(cases):
        EXERCISES[key] = Exercise(key, title, reference=reference, cases=cases, expected=expected, **options)
        return cases

    if expected is not None:
        return register(None)
    return register


def get(key):
    """The exercise ``key``, loading its notebook's module on first use."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise ValueError(f"check's first argument is the exercise's key, such as '05.1'; got {key!r}")
    if key not in EXERCISES:
        try:
            importlib.import_module(f"{__name__}.nb{key[:2]}")
        except ModuleNotFoundError:
            pass
    if key not in EXERCISES:
        raise KeyError(f"there is no exercise {key}; notebook {key[:2]} has {sorted(k for k in EXERCISES if k[:2] == key[:2])}")
    return EXERCISES[key]


# ---------------------------------------------------------------- comparing an answer with the reference

def _short(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, torch.nn.Module):
        return f"a {type(value).__name__} module"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def difference(got, want, rel_tol=1e-5, abs_tol=1e-6):
    """``None`` when ``got`` agrees with ``want``, else a few words saying how it differs."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"returned {type(got).__name__}, expected a tensor"
        if got.shape != want.shape:
            return f"shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return f"dtype {str(got.dtype).replace('torch.', '')}, expected {str(want.dtype).replace('torch.', '')}"
        if want.dtype == torch.bool or not want.is_floating_point():
            wrong = got != want
        else:
            wrong = ~torch.isclose(got.detach(), want.detach(), rtol=rel_tol, atol=abs_tol, equal_nan=True)
        if wrong.any():
            worst = (got.detach().double() - want.detach().double()).abs().max().item()
            return f"value differs at {int(wrong.sum()):,} of {want.numel():,} entries (largest difference {worst:.3g})"
        return None
    if isinstance(want, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(want):
            return f"returned {_short(got)}, expected {len(want)} items"
        for i, (g, w) in enumerate(zip(got, want)):
            problem = difference(g, w, rel_tol, abs_tol)
            if problem:
                return f"item {i}: {problem}"
        return None
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"returned {_short(got)}, expected a dict with keys {sorted(want)}"
        for k in want:
            problem = difference(got[k], want[k], rel_tol, abs_tol)
            if problem:
                return f"[{k!r}]: {problem}"
        return None
    if isinstance(want, bool) or not isinstance(want, (int, float)):
        return None if got == want else f"returned {_short(got)}, expected something else"
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"returned {_short(got)}, expected a number"
    return None if math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol) else f"returned {got:.6g}, expected another value"


def _names(errors):
    return " or ".join(e.__name__ for e in (errors if isinstance(errors, tuple) else (errors,)))


def same_output(got, want, probe, prefix=""):
    """``None`` when the modules ``got`` and ``want`` give the same output on ``probe``, else what differs
    (``prefix`` + the difference), or what ``got`` raised."""
    try:
        with torch.no_grad():
            out_got, out_want = got(probe), want(probe)
    except Exception as error:
        return f"running it on a {tuple(probe.shape)} input raised {type(error).__name__}: {str(error).splitlines()[0]}"
    problem = difference(out_got, out_want, 1e-4, 1e-5)
    return problem and f"{prefix}{problem}"


def _unanswered(answer):
    return answer is None or answer is Ellipsis


def _run(ex, fn):
    """(passed, message) for the student's function ``fn``; message is one line. The global random state is
    left as it was, so that later cells draw the same numbers whether or not the exercise passes."""
    with torch.random.fork_rng(devices=[]):
        return _run_cases(ex, fn)


def _run_cases(ex, fn):
    if not callable(fn):
        return False, f"❌ expected your function (its name, without brackets), got {_short(fn)}"
    cases = ex.cases()
    for n, case in enumerate(cases, 1):
        where = f"case {n} of {len(cases)} ({case.label})"
        try:
            got = fn(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))  # fresh copies: no shared state
        except Exception as error:  # the student's code failed: say how, in one line
            if case.raises and isinstance(error, case.raises):
                continue
            if n == 1 and isinstance(error, NotImplementedError):
                return None, NOT_YET_DONE
            text = f"raised {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
            if case.raises:
                text += f"; expected {_names(case.raises)}"
            return False, f"❌ {where}: {text}. {ex.hint}".rstrip()
        if n == 1 and got is None:
            return None, NOT_YET_DONE  # a body that is still `...` returns None
        if case.raises:
            return False, f"❌ {where}: should raise {_names(case.raises)}, but returned {_short(got)}"
        want = ex.reference(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))
        problem = (ex.compare or (lambda g, w: difference(g, w, ex.rel_tol, ex.abs_tol)))(got, want)
        if problem:
            return False, f"❌ {where}: {problem}. {ex.hint}".rstrip()
    return True, f"✅ passes all {len(cases)} cases: {ex.title}"


def _judge(ex, answer):
    if ex.builds:
        return _run(ex, answer)
    if _unanswered(answer):
        return None, NOT_YET_DONE
    problem = difference(answer, ex.expected(), ex.rel_tol, ex.abs_tol)
    if problem:
        hint = ex.hint if "expected another value" in problem else ""  # a wrong kind of answer needs no maths hint
        return False, f"❌ not quite: {problem.replace('returned', 'you answered')}. {hint}".rstrip()
    return True, f"✅ correct: {_short(answer)}"


def check(key, answer=..., *legacy, required=False, **legacy_options):
    """Check the answer to exercise ``key`` (``"NN.k"``) and print one line.

    ``answer`` is the student's function (build it) or value (work it out). Unanswered (``...``, or a
    function whose body is still ``...``) prints "not yet done". With ``required=True`` (the worked
    solutions, the graders) anything but a pass raises an AssertionError.
    """
    if legacy or legacy_options or not isinstance(key, str) or not KEY.fullmatch(key):
        return _legacy_check(key, answer, *legacy, required=required, **legacy_options)
    ok, message = _judge(get(key), answer)
    if required and not ok:
        raise AssertionError(f"exercise {key}: {message}")
    print(message)


def yours_or_reference(key, fn):
    """Your function if it passes exercise ``key``'s check, else the course's reference; says which."""
    ex = get(key)
    name = getattr(fn, "__name__", "your function")
    ok, _ = _run(ex, fn) if callable(fn) else (False, "")
    if ok:
        print(f"using your {name} (it passes its check)")
        return fn
    print(f"using the course's reference {name}: yours does not pass exercise {key} yet")
    return ex.reference


# ---------------------------------------------------------------- the old form, check(answer, expected)

def _legacy_check(answer, expected, *, rel_tol=0.0, hint="", required=False):
    """``check(answer, expected)``: compare a value with one given in the cell (notebooks not yet moved to keys)."""
    if _unanswered(answer):
        message, ok = NOT_YET_DONE, False
    else:
        try:
            ok = bool(math.isclose(answer, expected, rel_tol=rel_tol) if rel_tol else answer == expected)
        except TypeError:  # e.g. a string where a number was expected
            ok = False
        message = f"✅ correct: {answer!r}" if ok else f"❌ not quite: got {answer!r}. {hint}".rstrip()
    if required and not ok:
        raise AssertionError(f"{message} (expected {expected!r})")
    print(message)
