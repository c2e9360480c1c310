"""Challenges: a target to reach with a model the student makes, measured on the held-out test set.

``challenge("05", model)`` measures the model the way the challenge says (accuracy on the test set,
sparsity, file size, latency ...), prints each figure against its target, and records the attempt in
``data/results/challenges.json``: every attempt with its date, and the best one per challenge, so that
a student sees their progress. Each notebook that trains defines its challenges in its exercises module
(``helpers/exercises/nb05.py`` ...) with :func:`define`.
"""
import datetime
import importlib
import json
from dataclasses import dataclass
from typing import Callable

from ..env import DATA_DIR, FAST, atomic_file

RECORD = DATA_DIR / "results" / "challenges.json"


@dataclass
class Challenge:
    key: str
    title: str
    measure: Callable  # (model) -> {figure: value}
    targets: dict      # {figure: (">=" or "<=", target value or a function of nothing that computes it)}
    score: str         # the figure that ranks attempts that meet every target
    higher_is_better: bool = True


CHALLENGES = {}


def define(key, title, measure, targets, score, higher_is_better=True):
    CHALLENGES[key] = Challenge(key, title, measure, targets, score, higher_is_better)


def _get(key):
    if key not in CHALLENGES:
        try:
            importlib.import_module(f"helpers.exercises.nb{str(key)[:2]}")
        except ModuleNotFoundError:
            pass
    if key not in CHALLENGES:
        raise KeyError(f"there is no challenge {key!r}; the course has {sorted(CHALLENGES) or 'none loaded yet'}")
    return CHALLENGES[key]


def _meets(value, how, target):
    return value >= target if how == ">=" else value <= target


def load_record(path=None):
    """The record of every attempt so far (``{}`` when there is none). An unreadable file is moved aside
    to ``challenges.json.bad``, never deleted, and a new record started."""
    path = path or RECORD
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        path.replace(path.with_name(path.name + ".bad"))
        print(f"  (could not read {path.name}: moved it to {path.name}.bad and started a new record)")
        return {}


def challenge(key, model, *, note="", path=None):
    """Measure ``model`` for challenge ``key``, print how it does against each target, record the attempt.

    Returns the figures (a dict) with ``passed`` (True when every target is met). ``note`` (a few words:
    what you did) is kept with the attempt. Fast-mode attempts are recorded apart from full-mode ones.
    """
    ch = _get(key)
    figures = {name: float(value) for name, value in ch.measure(model).items()}
    passed = True
    print(f"challenge {key}: {ch.title}{' (fast mode: small data, a rehearsal)' if FAST else ''}")
    for name, (how, target) in ch.targets.items():
        target = target() if callable(target) else target
        ok = bool(_meets(figures[name], how, target))
        passed &= ok
        print(f"  {'✅' if ok else '❌'} {name}: {figures[name]:.4g} (target {how} {target:.4g})")
    figures["passed"] = passed
    path = path or RECORD
    record = load_record(path)
    entry = record.setdefault(f"{key}{'-fast' if FAST else ''}", {"attempts": [], "best": None})
    entry["title"] = ch.title  # the target as it is now (the attempts keep their own figures)
    attempt = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "note": note, **figures}
    entry["attempts"].append(attempt)
    best = entry["best"]  # the best attempt that met every target, or None
    if passed and (best is None or (attempt[ch.score] > best[ch.score]) == ch.higher_is_better):
        entry["best"] = attempt
        print(f"  🏆 your best so far ({ch.score} {attempt[ch.score]:.4g}); recorded in {path}")
    print(f"  attempts so far: {len(entry['attempts'])}, of which {sum(a['passed'] for a in entry['attempts'])} met every target")
    with atomic_file(path, "w") as file:
        json.dump(record, file, indent=1)
    return figures
