"""The references of notebooks 09 and 10's exercises: helpers.compress.fusion.merge_repvgg,
helpers.pipeline.rank_for_budget and helpers.pipeline.choose_step, bad input included."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from helpers import RepVGGBlock, count_params
from helpers.compress import low_rank, reparameterize
from helpers.compress.fusion import merge_repvgg
from helpers.pipeline import choose_step, rank_for_budget


def _trained_looking(block):
    g = torch.Generator().manual_seed(0)
    for bn in (m for m in block.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return block.eval()


@pytest.mark.parametrize("args", [(8, 8), (4, 8), (8, 8, 2)])
def test_merge_repvgg_is_one_conv_that_computes_the_block(args):
    block = _trained_looking(RepVGGBlock(*args))
    before = {k: v.clone() for k, v in block.state_dict().items()}
    merged = merge_repvgg(block)
    assert [type(m) for m in merged] == [nn.Conv2d, nn.ReLU] and merged[0].stride == block.conv3[0].stride
    x = torch.randn(2, args[0], 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), block(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(reparameterize(nn.Sequential(block))(x), merged(x))  # reparameterize uses it
    assert all(torch.equal(before[k], v) for k, v in block.state_dict().items())  # the block is left as it was


def test_merge_repvgg_refuses_anything_else():
    with pytest.raises(TypeError, match="RepVGGBlock"):
        merge_repvgg(nn.Conv2d(4, 4, 3))


@pytest.mark.parametrize("n, m, bias, budget", [(1568, 256, True, 38_400), (1568, 256, True, 29_440),
                                                (100, 50, False, 1_000), (60, 20, True, 10_000),
                                                (30, 40, True, 2_010.5)])
def test_rank_for_budget_is_the_largest_rank_low_rank_fits_in(n, m, bias, budget):
    layer = nn.Sequential(nn.Linear(n, m, bias=bias))
    r = rank_for_budget(layer[0], budget)
    assert isinstance(r, int) and 1 <= r <= min(n, m)
    assert count_params(low_rank(layer, r)) <= budget
    if r < min(n, m):
        assert count_params(low_rank(layer, r + 1)) > budget


def test_rank_for_budget_bad_input():
    with pytest.raises(TypeError, match="nn.Linear"):
        rank_for_budget(nn.Conv2d(4, 8, 3), 1_000)
    with pytest.raises(ValueError, match="rank 1"):
        rank_for_budget(nn.Linear(100, 20), 139)  # rank 1 costs 100 + 20 weights + 20 biases = 140
    assert rank_for_budget(nn.Linear(100, 20), 140) == 1


def _table():
    return pd.DataFrame({"accuracy": [0.91, 0.90, 0.90, 0.89], "size_bytes": [1000, 400, 390, 100],
                         "latency_b1_ms": [1.0, 0.5, 0.45, 0.2]}, index=["original", "pruned", "folded", "int8"])


def test_choose_step_most_accurate_then_smaller_then_earlier():
    table = _table()
    assert choose_step(table, math.inf, math.inf) == "original"
    assert choose_step(table, 500, 1.0) == "folded"    # as accurate as "pruned", smaller file
    assert choose_step(table, 400, 0.5) == "folded"
    assert choose_step(table, 100, 0.2) == "int8"      # at the budget: fits
    table.loc["folded", "size_bytes"] = 400
    assert choose_step(table, 500, 1.0) == "pruned"    # equal in both: the earlier step


def test_choose_step_bad_input():
    with pytest.raises(ValueError, match="no step"):
        choose_step(_table(), 99, 1.0)
    with pytest.raises(KeyError, match="latency_b1_ms"):
        choose_step(_table().drop(columns="latency_b1_ms"), 500, 1.0)
