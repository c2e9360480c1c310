"""Notebook 08 (low-rank decomposition): the rank that keeps a share of the energy, a Linear layer split by a
truncated SVD, the decoding of product quantization, three costs worked out by hand; and the challenge: fc1 at
the lowest rank that loses at most half a point of accuracy."""
import math

import torch
from torch import nn

from ..compress.lowrank import factorise_linear, pq_decode, rank_for_energy
from . import Case, exercise, same_output
from .challenges import define


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _svdvals(rows, cols, seed):
    return torch.linalg.svdvals(torch.randn(rows, cols, generator=_gen(seed)))


# ---------------------------------------------------------------- 08.1: the rank for a share of the energy

@exercise("08.1", "the smallest rank that keeps a share of the energy", reference=rank_for_energy,
          hint="kept = cumsum(s²) / sum(s²); the answer is 1 + the number of ranks whose kept share is still "
               "below energy, never more than len(s); raise ValueError unless 0 < energy <= 1.")
def _energy_cases():
    spectrum = _svdvals(8, 12, seed=0)
    rounded = _svdvals(8, 12, seed=2)  # in float32, cumsum(s²) / sum(s²) ends at 0.99999994, just below 1
    exact = torch.tensor([2.0, 1.0, 1.0, 1.0, 1.0])  # s² = 4, 1, 1, 1, 1: shares 0.5, 0.625, 0.75, 0.875, 1
    return [Case("the spectrum of a random 8 x 12 matrix, energy 0.9", (spectrum, 0.9)),
            Case("the same spectrum, energy 0.5", (spectrum, 0.5)),
            Case("s = 2, 1, 1, 1, 1 and energy 0.75, kept exactly at rank 3 (reaching the share is enough)",
                 (exact, 0.75)),
            Case("energy 1 with two zero singular values at the end: they are not needed",
                 (torch.cat([exact, torch.zeros(2)]), 1.0)),
            Case("energy 1 on a spectrum whose float32 share ends at 0.99999994: at most len(s), here 8",
                 (rounded, 1.0)),
            Case("a tiny energy, 1e-6: the answer is still at least rank 1", (spectrum, 1e-6)),
            Case("energy 0 (nothing to keep is not a rank)", (spectrum, 0.0), raises=ValueError),
            Case("energy 1.5 (a share is at most 1)", (spectrum, 1.5), raises=ValueError)]


# ---------------------------------------------------------------- 08.2: one Linear layer as two thin ones

def _linear(n_in, n_out, seed, bias=True):
    """An nn.Linear whose weights come from a seeded generator (not from the global random state)."""
    layer = nn.Linear(n_in, n_out, bias=bias)
    g = _gen(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(n_out, n_in, generator=g))
        if bias:
            layer.bias.copy_(torch.randn(n_out, generator=g))
    return layer


def _short_module(value):
    if isinstance(value, nn.Sequential):
        return f"an nn.Sequential of {', '.join(type(m).__name__ for m in value) or 'nothing'}"
    return type(value).__name__


def _same_layer(got, want):
    """None when ``got`` has ``want``'s parameter count and computes the same output on a probe input."""
    if not (isinstance(got, nn.Sequential) and len(got) == 2 and all(isinstance(m, nn.Linear) for m in got)):
        return f"returned {_short_module(got)}, expected nn.Sequential(first, second) of two nn.Linear layers"
    n_got, n_want = (sum(p.numel() for p in m.parameters()) for m in (got, want))
    if n_got != n_want:
        return (f"{n_got:,} parameters, expected {n_want:,} (r (m + n) weights, and the layer's m biases, if it has "
                f"them, on the second layer only)")
    probe = torch.randn(5, want[0].in_features, generator=_gen(99))
    return same_output(got, want, probe, prefix="the right parameter count, but the output's ")


@exercise("08.2", "a Linear layer as two thin ones, by a truncated SVD", reference=factorise_linear,
          compare=_same_layer,
          hint="U, S, Vh = torch.linalg.svd(W, full_matrices=False); first = Linear(n, r, bias=False) with weight "
               "S[:r, None] * Vh[:r]; second = Linear(r, m) with weight U[:, :r] and the layer's bias.")
def _split_cases():
    return [Case("a 12 -> 20 layer at rank 4", (_linear(12, 20, seed=0), 4)),
            Case("rank 1: a single direction", (_linear(12, 20, seed=1), 1)),
            Case("full rank, min(m, n) = 12: the layer itself, exactly", (_linear(12, 20, seed=2), 12)),
            Case("a layer without a bias (bias=False)", (_linear(16, 8, seed=3, bias=False), 3)),
            Case("a wide layer, 30 -> 6, at rank 5", (_linear(30, 6, seed=4), 5)),
            Case("rank 0", (_linear(12, 20, seed=5), 0), raises=ValueError),
            Case("rank 13 for a 12 -> 20 layer, whose weight has rank at most 12", (_linear(12, 20, seed=6), 13),
                 raises=ValueError),
            Case("an nn.Conv2d instead of an nn.Linear", (nn.Conv2d(3, 8, 3), 2), raises=TypeError)]


# ---------------------------------------------------------------- 08.3: decoding product quantization

def _pq(s, k, d, n, seed, dtype=torch.uint8):
    g = _gen(seed)
    return torch.randn(s, k, d, generator=g), torch.randint(0, k, (s, n), generator=g).to(dtype)


@exercise("08.3", "the matrix behind product quantization's codebooks and codes", reference=pq_decode,
          hint="codebooks[g, codes[g, j]] for every g and j gives [s, n, d] (index with torch.arange(s)[:, None] "
               "and codes.long()); sub-space g is rows g*d .. g*d+d-1, so bring d before n (permute) and then "
               "reshape to [s*d, n]; a reshape alone puts the numbers in the wrong places.")
def _decode_cases():
    return [Case("4 codebooks of 16 centroids of length d = 2, 10 columns, uint8 codes (as stored)",
                 _pq(4, 16, 2, 10, seed=0)),
            Case("d = 1: one number per code and row", _pq(6, 8, 1, 7, seed=1)),
            Case("one sub-space (s = 1): each column is one whole centroid", _pq(1, 5, 4, 9, seed=2)),
            Case("codes as int64 rather than uint8", _pq(3, 256, 4, 12, seed=3, dtype=torch.int64)),
            Case("a single column (n = 1)", _pq(4, 16, 3, 1, seed=4)),
            Case("5 rows of codes for 4 codebooks", (_pq(4, 16, 2, 10, seed=5)[0], _pq(5, 16, 2, 10, seed=6)[1]),
                 raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand

def _spatial_macs():
    from ..measure import count_macs

    pair = nn.Sequential(nn.Conv2d(32, 24, (5, 1), padding=(2, 0), bias=False),  # k x 1, C_in -> r
                         nn.Conv2d(24, 64, (1, 5), padding=(0, 2), bias=False))  # 1 x k, r -> C_out
    return count_macs(pair, torch.zeros(1, 32, 28, 28))


exercise("08.4", "the largest rank at which a 512 x 4096 layer still saves weights",
         expected=lambda: max(r for r in range(1, 513) if r * (512 + 4096) < 512 * 4096),
         hint="r (m + n) weights against m n: the largest whole r with r (m + n) < m n.")
exercise("08.5", "the relative error at rank 2 of singular values 5, 3, 1, 0.5",
         expected=lambda: math.sqrt((1 ** 2 + 0.5 ** 2) / (5 ** 2 + 3 ** 2 + 1 ** 2 + 0.5 ** 2)), rel_tol=1e-4,
         hint="||W - W_2||² is the sum of the dropped s², ||W||² the sum of all s²; then the square root.")
exercise("08.6", "the MACs of a 5x5 convolution 32 -> 64, split spatially at rank 24, on a 28 x 28 map",
         expected=_spatial_macs,
         hint="Vertical k x 1 (C_in -> r), then horizontal 1 x k (r -> C_out), both keeping the 28 x 28 map: "
              "(C_in k r + r k C_out) per output position.")


# ---------------------------------------------------------------- the challenge

FC1 = "15"  # fc1's name in the course's VGG (an nn.Sequential)


def _fc1(model):
    try:
        fc1 = model.get_submodule(FC1)
    except AttributeError:
        raise ValueError(f"challenge 08 takes the course's VGG with its fc1 (layer {FC1!r}) factorised, e.g. "
                         f"low_rank(model, rank=32, layers=['{FC1}']); this model has no layer {FC1!r}") from None
    linears = [m for m in fc1.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"layer {FC1!r} of this model holds no nn.Linear: is it the course's VGG?")
    return fc1, min(min(m.in_features, m.out_features) for m in linears)


def _measure(model):
    from ..data import load_dataset
    from ..measure import count_params
    from ..train import evaluate, trained_small_vgg

    original = trained_small_vgg()
    (fc1, rank), (original_fc1, _) = _fc1(model), _fc1(original)
    test = load_dataset("fashion-mnist", train=False)
    accuracy, original_accuracy = evaluate(model, test), evaluate(original, test)
    outside = (count_params(model) - count_params(fc1)) / (count_params(original) - count_params(original_fc1))
    return {"accuracy": accuracy, "original accuracy": original_accuracy,
            "points lost": 100 * (original_accuracy - accuracy), "rank of fc1": rank,
            "fc1 parameters / original's": count_params(fc1) / count_params(original_fc1),
            "other layers' parameters / original's": outside}


define("08", "fc1 of the course's VGG at the lowest rank, at most 0.5 point below the original's test accuracy",
       _measure, targets={"points lost": ("<=", 0.5), "fc1 parameters / original's": ("<=", 1.0),
                          "other layers' parameters / original's": ("<=", 1.0)},
       score="rank of fc1", higher_is_better=False)
