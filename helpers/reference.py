"""Figures from one machine, kept in a file and shown with the machine they came from.

Most numbers in the notebooks are computed live, on the reader's machine. A few take too long for
that (a full-data experiment, a search that trains dozens of networks): a notebook run in full mode
records them with :func:`record` into ``data/results/<name>.json``, and the course keeps one such
file from its reference machine in ``data/reference/<name>.json`` (committed). A notebook shows
them through :func:`reference`, whose ``label`` says where and when they were measured, and never
types them into its prose.

    python -m helpers.reference promote 11_architecture_search

copies your own ``data/results/11_architecture_search.json`` over the reference file (for the
course's maintainers, after a full-mode run).
"""
import datetime
import json
import os
import platform
import shutil
import sys

import torch

from .env import DATA_DIR, FAST, atomic_file, cpu_flags

RESULTS = DATA_DIR / "results"
REFERENCE = DATA_DIR / "reference"


def machine():
    """What a figure depends on: CPU, cores, vector instructions, PyTorch version, mode and date."""
    return {"cpu": platform.machine(), "cores": os.cpu_count(), "flags": " ".join(cpu_flags()),
            "torch": torch.__version__, "mode": "fast" if FAST else "full", "date": datetime.date.today().isoformat()}


def record(name, figures, *, how="", merge=False):
    """Write ``figures`` (a dict of JSON values) to ``data/results/<name>.json`` with :func:`machine`.

    ``how`` says in words what was run (settings, sizes), so that a reader can reproduce it. With
    ``merge=True`` the figures are added to those already in the file (one entry per run of different
    settings) instead of replacing them.
    """
    if not isinstance(figures, dict) or not figures:
        raise TypeError(f"record(name, figures): figures must be a non-empty dict, got {type(figures).__name__}")
    path = RESULTS / f"{name}.json"
    if merge and path.exists():
        figures = {**json.loads(path.read_text())["figures"], **figures}
    with atomic_file(path, "w") as file:
        json.dump({"machine": machine(), "how": how, "figures": figures}, file, indent=1)
    return path


class Reference(dict):
    """The figures of one reference file (a dict), with ``machine``, ``how`` and a printable ``label``."""

    def __init__(self, data):
        super().__init__(data["figures"])
        self.machine, self.how = data["machine"], data.get("how", "")

    @property
    def label(self):
        m = self.machine
        return (f"measured on the reference machine ({m['cores']} cores, {m['cpu']} {m['flags'] or 'no flags read'}, "
                f"torch {m['torch']}, {m['mode']} mode, {m['date']}){': ' + self.how if self.how else ''}")


def reference(name):
    """The reference machine's figures for ``name`` (see the module's docstring)."""
    path = REFERENCE / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in REFERENCE.glob("*.json"))
        raise FileNotFoundError(f"no reference figures {path.name} in data/reference/; the course has: {known}")
    return Reference(json.loads(path.read_text()))


def promote(name):
    """Copy ``data/results/<name>.json`` (your full-mode run) to ``data/reference/<name>.json``."""
    source = RESULTS / f"{name}.json"
    data = json.loads(source.read_text()) if source.exists() else None
    if data is None:
        raise FileNotFoundError(f"{source} does not exist: run the notebook in full mode first")
    if data["machine"]["mode"] != "full":
        raise ValueError(f"{source.name} was recorded in fast mode; the reference figures must come from a full run")
    REFERENCE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, REFERENCE / source.name)
    return REFERENCE / source.name


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "promote":
        sys.exit("usage: python -m helpers.reference promote NAME   (NAME: e.g. 11_architecture_search)")
    print(promote(sys.argv[2]))
