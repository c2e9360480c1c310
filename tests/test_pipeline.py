import pytest
import torch

from helpers import small_vgg, tree_net
from helpers import pipeline

DATA = torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))


@pytest.mark.parametrize("name, build, first_steps", [("vgg", lambda: small_vgg(width=4), ["original", "channels pruned"]),
                                                      ("tree", tree_net, ["original", "branches merged"])])
def test_every_step_runs_and_is_measured(name, build, first_steps):
    torch.manual_seed(0)
    original = build().eval()
    steps = pipeline.compress_steps(name, original, DATA, plan={**pipeline.PLANS[name], "rank": 8}, fast=True)
    assert list(steps)[:2] == first_steps
    assert list(steps)[-4:] == ["low rank", "BN folded", "int8", "int8, TorchScript"]
    assert steps["original"] is original
    table = pipeline.measure_steps(steps, DATA, repeat=2)
    assert list(table.index) == list(steps)
    assert table.iloc[0][["x fewer params", "x smaller file", "x faster b1", "x throughput b64"]].tolist() == [1, 1, 1, 1]
    assert table.loc["int8", "x smaller file"] > table.loc["BN folded", "x smaller file"] > 1
    assert table.loc["low rank", "params"] < table.loc["channels pruned", "params"]
    assert table.loc["int8", "params"] == table.loc["BN folded", "params"], "int8 keeps the fp32 model's parameter count"
    assert table.loc["int8, TorchScript", "accuracy"] == table.loc["int8", "accuracy"], "freezing keeps the function"
    assert "tuned fp32 speed-up b1" in table.attrs
    report = pipeline.markdown({name: table})
    assert "against the source" in report and "| int8" in report


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        pipeline.compress_steps("resnet", small_vgg(width=4), DATA)


def test_results_are_written_atomically_and_the_previous_report_is_kept(tmp_path):
    path = tmp_path / "results" / "pipeline.md"
    pipeline._write(path, "first")
    pipeline._write(path, "second")
    assert path.read_text() == "second"
    assert (tmp_path / "results" / "pipeline.md.previous").read_text() == "first"
    assert not list(path.parent.glob("*.tmp"))


def test_command_line_runs_every_model_by_default_and_refuses_unknown_ones(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(pipeline, "run", lambda names, repeat: calls.append((names, repeat)) or {})
    monkeypatch.setattr(pipeline, "markdown", lambda tables: "")
    pipeline.main([])
    pipeline.main(["tree", "--repeat", "5"])
    assert calls == [(["vgg", "tree"], 30), (["tree"], 5)]
    with pytest.raises(SystemExit):
        pipeline.main(["resnet"])
    assert "unknown model(s) resnet" in capsys.readouterr().err
