import pytest
import torch

from helpers import TreeBlock, small_vgg, tree_net
from helpers import compress, pipeline

DATA = torch.utils.data.TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))


@pytest.mark.parametrize("name, build, first_steps", [
    ("vgg", lambda: small_vgg(width=4), ["original", "channels pruned", "low rank"]),
    ("tree", tree_net, ["original", "block 1 merged", "block 2 merged", "channels pruned"])])
def test_every_step_runs_and_is_measured(name, build, first_steps):
    torch.manual_seed(0)
    original = build().eval()
    plan = {**pipeline.PLANS[name], "rank": 8} if name == "vgg" else None
    steps = pipeline.compress_steps(name, original, DATA, plan=plan, fast=True)
    assert list(steps) == first_steps + ["BN folded", "int8", "int8, TorchScript"]
    assert steps["original"] is original
    table = pipeline.measure_steps(steps, DATA, repeat=2)
    assert list(table.index) == list(steps)
    assert table.iloc[0][["x fewer params", "x smaller file", "x faster b1", "x throughput b64"]].tolist() == [1, 1, 1, 1]
    assert table.loc["int8", "x smaller file"] > table.loc["BN folded", "x smaller file"] > 1
    assert table.loc[first_steps[-1], "params"] < table.loc[first_steps[-2], "params"]
    assert table.loc["int8", "params"] == table.loc["BN folded", "params"], "int8 keeps the fp32 model's parameter count"
    assert table.loc["int8, TorchScript", "accuracy"] == table.loc["int8", "accuracy"], "freezing keeps the function"
    assert "tuned fp32 speed-up b1" in table.attrs
    report = pipeline.markdown({name: table})
    assert "against the source" in report and "| int8" in report


def test_the_tree_recipe_merges_block_by_block_with_fine_tuning_in_between_and_no_low_rank(monkeypatch):
    events = []
    merge, distill = compress.merge_tree_blocks, compress.distill

    def merging(model, data, **kwargs):
        events.append(("merge", sum(isinstance(m, TreeBlock) for m in model), kwargs.get("count")))
        return merge(model, data, **kwargs)

    def tuning(model, *args, **kwargs):
        events.append(("tune", sum(isinstance(m, TreeBlock) for m in model)))
        return distill(model, *args, **kwargs)

    monkeypatch.setattr(compress, "merge_tree_blocks", merging)
    monkeypatch.setattr(compress, "distill", tuning)
    monkeypatch.setattr(compress, "low_rank", lambda *a, **k: pytest.fail("the tree recipe has no low-rank step"))
    torch.manual_seed(0)
    pipeline.compress_steps("tree", tree_net().eval(), DATA, fast=True)
    # each merge takes one block out of the model that the previous fine-tuning left, then it is fine-tuned
    assert events[:4] == [("merge", 2, 1), ("tune", 1), ("merge", 1, 1), ("tune", 0)]
    assert events[4:] == [("tune", 0)], "then pruning and its fine-tuning"
    assert "rank" not in pipeline.PLANS["tree"]


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
