"""Low-rank decomposition (notebook 08): Linear layers replaced by two thinner ones from a truncated SVD."""
import copy

import torch
from torch import nn


def _rank_for(singular_values, rank, energy, name):
    largest = len(singular_values)
    if rank is not None:
        if rank > largest:
            raise ValueError(f"rank {rank} is more than layer {name!r} allows: its weight has rank at most {largest}")
        return rank
    kept = torch.cumsum(singular_values ** 2, 0) / (singular_values ** 2).sum()
    return int((kept < energy - 1e-7).sum()) + 1  # the fewest singular values that keep `energy` of it


def low_rank(model, rank=None, *, energy=None, layers=None):
    """A copy of ``model`` whose Linear layers are each replaced by two thinner ones (truncated SVD).

    ``W ≈ U_r S_r V_rᵀ`` becomes ``Linear(n -> r)`` with weight ``S_r V_rᵀ`` followed by
    ``Linear(r -> m)`` with weight ``U_r`` and the original bias: ``r (m + n)`` weights instead of
    ``m n``. Give either ``rank`` (a whole number >= 1, the same for every layer) or ``energy`` (in
    (0, 1]: per layer, the smallest rank whose singular values keep that fraction of ``sum s²``).
    ``layers`` lists the names (as in ``model.named_modules()``) of the Linear layers to replace;
    by default all of them.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if (rank is None) == (energy is None):
        raise ValueError("give either rank (e.g. rank=32) or energy (e.g. energy=0.9), not both and not neither")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a whole number >= 1, got {rank!r}")
    if energy is not None and (isinstance(energy, bool) or not isinstance(energy, (int, float)) or not 0 < energy <= 1):
        raise ValueError(f"energy is the fraction of the singular values' energy to keep, in (0, 1], got {energy!r}")
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
        U, S, Vh = torch.linalg.svd(linear.weight.detach(), full_matrices=False)
        r = _rank_for(S, rank, energy, name)
        first = nn.Linear(linear.in_features, r, bias=False)
        second = nn.Linear(r, linear.out_features, bias=linear.bias is not None)
        first.weight.data.copy_(S[:r, None] * Vh[:r])
        second.weight.data.copy_(U[:, :r])
        if linear.bias is not None:
            second.bias.data.copy_(linear.bias.detach())
        parent, _, child = name.rpartition(".")
        setattr(new.get_submodule(parent) if parent else new, child, nn.Sequential(first, second))
    return new
