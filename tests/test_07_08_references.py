"""The references of notebooks 07 and 08's exercises (helpers.compress.distillation, helpers.compress.lowrank):
right, and clear on bad input."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.compress import distillation_loss, low_rank
from helpers.compress.distillation import soft_targets
from helpers.compress.lowrank import factorise_linear, pq_decode, rank_for_energy


# ---------------------------------------------------------------- soft targets and the distillation loss

def test_soft_targets_is_the_softmax_of_logits_over_T():
    z = torch.randn(4, 10)
    for T in (0.5, 1, 4.0):
        torch.testing.assert_close(soft_targets(z, T), torch.exp(z / T) / torch.exp(z / T).sum(1, keepdim=True))
    assert torch.isfinite(soft_targets(z + 1000, 4.0)).all(), "large logits do not overflow"
    uniform = soft_targets(z, 1e6)
    torch.testing.assert_close(uniform, torch.full_like(z, 0.1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("logits, T, error, says", [
    (torch.randn(3), 0.0, ValueError, "must be a number > 0"), (torch.randn(3), -1, ValueError, "> 0"),
    (torch.randn(3), True, ValueError, "> 0"), ([1.0, 2.0], 2.0, TypeError, "floating-point tensor"),
    (torch.arange(3), 2.0, TypeError, "dtype int64")])
def test_soft_targets_says_what_is_wrong(logits, T, error, says):
    with pytest.raises(error, match=says):
        soft_targets(logits, T)


def test_distillation_loss_survives_a_teacher_probability_of_zero():
    s, y = torch.randn(2, 5), torch.tensor([0, 3])
    t = torch.zeros(2, 5)
    t[:, 1] = 300.0  # the other probabilities underflow to exactly 0 at T = 1
    assert torch.softmax(t, 1).min() == 0
    loss = distillation_loss(s, t, y, T=1.0, alpha=1.0)
    torch.testing.assert_close(loss, -F.log_softmax(s, 1)[:, 1].mean())  # KL(one-hot || q) = -log q_1


@pytest.mark.parametrize("student, teacher, labels, error, says", [
    (torch.randn(4, 10), torch.randn(4, 5), torch.zeros(4, dtype=torch.long), ValueError, "same shape"),
    (torch.randn(4, 10), torch.randn(3, 10), torch.zeros(4, dtype=torch.long), ValueError, "same shape"),
    (torch.randn(4, 10), torch.randn(4, 10), torch.zeros(3, dtype=torch.long), ValueError, "one class index per image"),
    (torch.randn(10), torch.randn(10), torch.zeros(1, dtype=torch.long), ValueError, r"\[batch, classes\]"),
    (torch.randn(4, 10), [[0.0] * 10] * 4, torch.zeros(4, dtype=torch.long), TypeError, "teacher_logits must be a tensor"),
])
def test_distillation_loss_refuses_shapes_that_do_not_fit(student, teacher, labels, error, says):
    with pytest.raises(error, match=says):
        distillation_loss(student, teacher, labels)


# ---------------------------------------------------------------- the rank for a share of the energy

def test_rank_for_energy_is_the_first_rank_that_reaches_the_share():
    s = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # shares 0.5, 0.625, 0.75, 0.875, 1, 1
    assert [rank_for_energy(s, e) for e in (1e-9, 0.5, 0.51, 0.75, 0.76, 0.99, 1.0)] == [1, 1, 2, 3, 4, 5, 5]
    for seed in range(20):  # never past the end, whatever float32 rounding does to the last share
        values = torch.linalg.svdvals(torch.randn(8, 12, generator=torch.Generator().manual_seed(seed)))
        assert rank_for_energy(values, 1.0) <= 8


@pytest.mark.parametrize("values, energy, error, says", [
    (torch.tensor([3.0, 1.0]), 0.0, ValueError, r"in \(0, 1\]"), (torch.tensor([3.0, 1.0]), 1.5, ValueError, r"\(0, 1\]"),
    (torch.tensor([1.0, 3.0]), 0.9, ValueError, "sorted from the largest"),
    (torch.tensor([3.0, -1.0]), 0.9, ValueError, ">= 0"), (torch.zeros(3), 0.9, ValueError, "every singular value is 0"),
    (torch.ones(2, 2), 0.9, ValueError, "1-D"), (torch.tensor([]), 0.9, ValueError, "non-empty"),
    ([3.0, 1.0], 0.9, TypeError, "floating-point tensor"), (torch.tensor([3, 1]), 0.9, TypeError, "dtype int64")])
def test_rank_for_energy_says_what_is_wrong(values, energy, error, says):
    with pytest.raises(error, match=says):
        rank_for_energy(values, energy)


# ---------------------------------------------------------------- one Linear as two, and low_rank

def test_factorise_linear_is_the_truncated_svd():
    torch.manual_seed(0)
    layer, x = nn.Linear(30, 20), torch.randn(5, 30)
    U, S, Vh = torch.linalg.svd(layer.weight.detach(), full_matrices=False)
    for r in (1, 7, 20):
        first, second = factorise_linear(layer, r)
        assert first.bias is None and first.weight.shape == (r, 30) and second.weight.shape == (20, r)
        torch.testing.assert_close(second.weight @ first.weight, (U[:, :r] * S[:r]) @ Vh[:r])
    torch.testing.assert_close(factorise_linear(layer, 20)(x), layer(x), rtol=1e-4, atol=1e-5)
    no_bias = factorise_linear(nn.Linear(8, 6, bias=False), 3)
    assert no_bias[1].bias is None and sum(p.numel() for p in no_bias.parameters()) == 3 * (8 + 6)


def test_low_rank_uses_factorise_linear_and_rank_for_energy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    ours = low_rank(net, rank=4, layers=["0"])[0]
    for a, b in zip(ours.state_dict().values(), factorise_linear(net[0], 4).state_dict().values()):
        torch.testing.assert_close(a, b)
    r = low_rank(net, energy=0.8, layers=["0"])[0][0].out_features
    assert r == rank_for_energy(torch.linalg.svdvals(net[0].weight.detach()), 0.8)


@pytest.mark.parametrize("layer, rank, error, says", [
    (nn.Linear(12, 20), 0, ValueError, "whole number >= 1"), (nn.Linear(12, 20), 2.0, ValueError, "whole number"),
    (nn.Linear(12, 20), 13, ValueError, "rank at most 12"), (nn.Conv2d(3, 8, 3), 2, TypeError, "got Conv2d")])
def test_factorise_linear_says_what_is_wrong(layer, rank, error, says):
    with pytest.raises(error, match=says):
        factorise_linear(layer, rank)


# ---------------------------------------------------------------- decoding product quantization

def test_pq_decode_puts_sub_space_g_in_rows_g_d_to_g_d_plus_d():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(12, 7, generator=g)
    d = 3
    codebooks = W.reshape(4, d, 7).transpose(1, 2).contiguous()  # every column's sub-vector is its own centroid
    codes = torch.arange(7).expand(4, 7).to(torch.uint8)
    torch.testing.assert_close(pq_decode(codebooks, codes), W)
    one = pq_decode(codebooks, torch.full((4, 2), 5, dtype=torch.uint8))
    torch.testing.assert_close(one[:, 0], W[:, 5])


@pytest.mark.parametrize("codebooks, codes, error, says", [
    (torch.randn(4, 16, 2), torch.zeros(5, 3, dtype=torch.uint8), ValueError, "the same s"),
    (torch.randn(4, 16), torch.zeros(4, 3, dtype=torch.uint8), ValueError, r"\[s, k, d\]"),
    (torch.randn(4, 16, 2), torch.full((4, 3), 16), ValueError, r"0 \.\. 15"),
    (torch.randn(4, 16, 2), torch.full((4, 3), -1), ValueError, "one of the 16 centroids"),
    (torch.randn(4, 16, 2), torch.zeros(4, 3), TypeError, "integer tensor"),
    (torch.zeros(4, 16, 2, dtype=torch.long), torch.zeros(4, 3, dtype=torch.uint8), TypeError, "floating-point")])
def test_pq_decode_says_what_is_wrong(codebooks, codes, error, says):
    with pytest.raises(error, match=says):
        pq_decode(codebooks, codes)
