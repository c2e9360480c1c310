"""Figures from one machine: recorded with the machine they came from, shown with its label."""
import json

import pytest

from helpers import reference as ref


@pytest.fixture
def folders(tmp_path, monkeypatch):
    monkeypatch.setattr(ref, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(ref, "REFERENCE", tmp_path / "reference")
    return tmp_path


def test_record_then_promote_then_read_with_its_machine(folders, monkeypatch):
    monkeypatch.setattr(ref, "FAST", False)
    path = ref.record("nb", {"r": 0.5, "rows": {"a": 1}}, how="two epochs")
    saved = json.loads(path.read_text())
    assert saved["figures"] == {"r": 0.5, "rows": {"a": 1}} and saved["machine"]["mode"] == "full"
    assert {"cpu", "cores", "flags", "torch", "date"} <= set(saved["machine"])
    ref.promote("nb")
    figures = ref.reference("nb")
    assert figures["r"] == 0.5 and figures["rows"] == {"a": 1}
    assert figures.label.startswith("measured on the reference machine (")
    assert f"{saved['machine']['cores']} cores" in figures.label and "two epochs" in figures.label


def test_record_can_add_a_run_beside_the_ones_already_recorded(folders):
    ref.record("nb", {"run a": 1})
    ref.record("nb", {"run b": 2}, merge=True)
    assert json.loads((folders / "results" / "nb.json").read_text())["figures"] == {"run a": 1, "run b": 2}
    ref.record("nb", {"run c": 3})
    assert json.loads((folders / "results" / "nb.json").read_text())["figures"] == {"run c": 3}


def test_fast_mode_figures_never_become_the_reference(folders, monkeypatch):
    monkeypatch.setattr(ref, "FAST", True)
    ref.record("nb", {"r": 0.5})
    with pytest.raises(ValueError, match="fast mode"):
        ref.promote("nb")


def test_missing_files_and_bad_figures_are_clear_errors(folders):
    with pytest.raises(FileNotFoundError, match="no reference figures nb.json"):
        ref.reference("nb")
    with pytest.raises(FileNotFoundError, match="run the notebook in full mode"):
        ref.promote("nb")
    with pytest.raises(TypeError, match="non-empty dict"):
        ref.record("nb", [1, 2])
