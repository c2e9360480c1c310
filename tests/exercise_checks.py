"""Shared by tests/test_exercises_nbNN.py: a wrong implementation must fail its check, the reference pass."""
from helpers.exercises import NOT_YET_DONE, check, get


def assert_check_catches(key, wrong, capsys):
    """The reference passes exercise ``key``'s check and ``wrong`` fails it, with a reason on one line."""
    check(key, get(key).reference)
    passed = capsys.readouterr().out
    assert passed.startswith("✅"), passed
    check(key, wrong)
    failed = capsys.readouterr().out
    assert failed.startswith("❌") and failed.count("\n") == 1, failed
    assert NOT_YET_DONE not in failed
