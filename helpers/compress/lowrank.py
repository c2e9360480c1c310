"""Low-rank decomposition (notebook 08): Linear layers replaced by two thinner ones from a truncated SVD,
the rank that keeps a share of a spectrum's energy, and the decoding of a product-quantized matrix."""
import copy

import torch
from torch import nn


def _whole(value):
    return not isinstance(value, bool) and isinstance(value, int)


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


def _check_energy(energy):
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1:
        raise ValueError(f"energy is the fraction of the singular values' energy to keep, in (0, 1], got {energy!r}")


def rank_for_energy(singular_values, energy):
    """The smallest rank ``r`` whose singular values keep at least ``energy`` of ``sum s²``.

    ``singular_values``: a 1-D tensor sorted from the largest down, as ``torch.linalg.svdvals`` returns
    them. The share kept at rank ``r`` is ``sum_{i<=r} s_i² / sum_i s_i²``; it is computed in float64 and
    the answer is never more than ``len(singular_values)`` (a cumulative share that rounds to just below
    1 still counts as everything). Raises ``TypeError`` unless ``singular_values`` is a floating-point
    tensor, ``ValueError`` when it is not 1-D, is empty, negative, unsorted or all zero, or when
    ``energy`` is outside (0, 1].
    """
    _check_energy(energy)
    s = singular_values
    if not isinstance(s, torch.Tensor) or not s.is_floating_point():
        raise TypeError("singular_values must be a floating-point tensor (torch.linalg.svdvals(W)), "
                        f"got {_describe(s)}")
    if s.dim() != 1 or len(s) == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D tensor, got shape {tuple(s.shape)}")
    if (s < 0).any() or (s[1:] > s[:-1]).any():
        raise ValueError("singular values are >= 0 and sorted from the largest down (as torch.linalg.svdvals "
                         f"returns them), got {s.tolist()[:6]}{' ...' if len(s) > 6 else ''}")
    squares = s.detach().double() ** 2
    if squares.sum() == 0:
        raise ValueError("every singular value is 0: a zero matrix has no energy to keep")
    kept = torch.cumsum(squares, 0) / squares.sum()
    return min(int((kept < energy).sum()) + 1, len(s))


def factorise_linear(linear, rank):
    """Two Linear layers, in an ``nn.Sequential``, that compute the rank-``rank`` SVD approximation of ``linear``.

    ``W ≈ U_r S_r V_rᵀ``: ``Linear(n -> r)`` with weight ``S_r V_rᵀ`` and no bias, then ``Linear(r -> m)``
    with weight ``U_r`` and ``linear``'s bias (if it has one): ``r (m + n)`` weights instead of ``m n``.
    ``linear`` is left unchanged. Raises ``TypeError`` unless ``linear`` is an ``nn.Linear``, ``ValueError``
    unless ``rank`` is a whole number from 1 to ``min(m, n)``.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"factorise_linear splits an nn.Linear, got {type(linear).__name__}")
    largest = min(linear.in_features, linear.out_features)
    if not _whole(rank) or rank < 1:
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if rank > largest:
        raise ValueError(f"rank {rank} is more than the layer allows: its {linear.out_features} x "
                         f"{linear.in_features} weight has rank at most {largest}")
    weight = linear.weight.detach()
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    like = {"device": weight.device, "dtype": weight.dtype}
    first = nn.Linear(linear.in_features, rank, bias=False, **like)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **like)
    with torch.no_grad():
        first.weight.copy_(S[:rank, None] * Vh[:rank])
        second.weight.copy_(U[:, :rank])
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def low_rank(model, rank=None, *, energy=None, layers=None):
    """A copy of ``model`` whose Linear layers are each replaced by two thinner ones (truncated SVD).

    Each layer becomes :func:`factorise_linear`'s pair: ``W ≈ U_r S_r V_rᵀ`` is ``Linear(n -> r)`` with
    weight ``S_r V_rᵀ`` followed by ``Linear(r -> m)`` with weight ``U_r`` and the original bias:
    ``r (m + n)`` weights instead of ``m n``. Give either ``rank`` (a whole number >= 1, the same for
    every layer) or ``energy`` (in (0, 1]: per layer, :func:`rank_for_energy` of its singular values).
    ``layers`` lists the names (as in ``model.named_modules()``) of the Linear layers to replace;
    by default all of them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if (rank is None) == (energy is None):
        raise ValueError("give either rank (e.g. rank=32) or energy (e.g. energy=0.9), not both and not neither")
    if rank is not None and (not _whole(rank) or rank < 1):
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if energy is not None:
        _check_energy(energy)
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name}
    if not linears:
        raise ValueError("the model has no Linear layer inside it to factorise (a single layer: wrap it, "
                         "nn.Sequential(layer))")
    names = list(linears) if layers is None else list(layers)
    for name in names:
        if name not in linears:
            raise ValueError(f"{name!r} is not a Linear layer of the model; its Linear layers are {list(linears)}")
    new = copy.deepcopy(model)
    for name in names:
        linear = new.get_submodule(name)
        if rank is not None and rank > min(linear.weight.shape):
            raise ValueError(f"rank {rank} is more than layer {name!r} allows: its weight has rank at most "
                             f"{min(linear.weight.shape)}")
        r = rank if rank is not None else rank_for_energy(torch.linalg.svdvals(linear.weight.detach()), energy)
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, factorise_linear(linear, r))
    return new


def pq_decode(codebooks, codes):
    """The ``m x n`` matrix that product quantization's codebooks and codes stand for.

    ``codebooks``: ``[s, k, d]``, sub-space ``g``'s ``k`` centroids of length ``d``; ``codes``: ``[s, n]``
    integers (uint8 when ``k <= 256``), the centroid chosen for each sub-space and column. Sub-space
    ``g`` holds rows ``g d`` to ``g d + d - 1``, so column ``j`` of the result is the concatenation of
    ``codebooks[g, codes[g, j]]`` for ``g = 0 .. s - 1``; ``m = s d``. Raises ``TypeError`` unless the
    codebooks are a floating-point tensor and the codes an integer tensor, ``ValueError`` when the
    shapes do not fit (``[s, k, d]`` and ``[s, n]`` with the same ``s``) or a code is not in ``0 .. k - 1``.
    """
    if not isinstance(codebooks, torch.Tensor) or not codebooks.is_floating_point():
        raise TypeError(f"codebooks must be a floating-point tensor [s, k, d], got {_describe(codebooks)}")
    integer = isinstance(codes, torch.Tensor) and not (codes.is_floating_point() or codes.is_complex()
                                                       or codes.dtype == torch.bool)
    if not integer:
        raise TypeError(f"codes must be an integer tensor [s, n] (uint8 for up to 256 centroids), got {_describe(codes)}")
    if codebooks.dim() != 3 or codes.dim() != 2 or len(codes) != len(codebooks):
        raise ValueError(f"codebooks must be [s, k, d] and codes [s, n] with the same s (one row of codes per "
                         f"codebook), got {tuple(codebooks.shape)} and {tuple(codes.shape)}")
    s, k, d = codebooks.shape
    codes = codes.long()
    if codes.numel() and (codes.min() < 0 or codes.max() >= k):
        raise ValueError(f"each code picks one of the {k} centroids of its codebook (0 .. {k - 1}), got codes "
                         f"from {codes.min().item()} to {codes.max().item()}")
    looked_up = codebooks[torch.arange(s, device=codes.device)[:, None], codes]  # [s, n, d]: each code's centroid
    return looked_up.permute(0, 2, 1).reshape(s * d, codes.shape[1])  # [s, d, n]: sub-space g gives rows g d .. g d + d - 1
