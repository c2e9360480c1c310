"""Checks for the exercises: ``check(answer, expected)`` says correct, not quite, or not yet done.

In an exercise a check only prints, so a notebook with unanswered exercises still runs from top
to bottom. The worked solutions call it with ``required=True``, which raises when the answer is
wrong, so the notebook test proves that every solution passes its own check.
"""
import math

NOT_YET_DONE = "⏳ not yet done: replace the ... with your answer and run the cell again."


def check(answer, expected, *, rel_tol=0.0, hint="", required=False):
    """Compare the reader's ``answer`` with ``expected`` (numbers within ``rel_tol``, else ``==``)."""
    if answer is None or answer is Ellipsis:
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
