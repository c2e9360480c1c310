"""Notebook 03 (channel shuffle): the shuffle, its inverse, the connectivity of a grouped convolution, and the
full-mixing rule worked out by hand."""
import torch

from .. import shuffle
from ..convs import valid_groups
from . import Case, exercise


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@exercise("03.1", "channel shuffle: reshape -> transpose -> reshape", reference=shuffle.channel_shuffle,
          hint="View the C channels as (groups, C // groups), transpose those two axes, flatten back to C: "
               "output position i * groups + j holds input channel j * (C // groups) + i.")
def _shuffle_cases():
    return [Case("12 channels in 3 groups, a batch of 2", (_randn(2, 12, 5, 5, seed=0), 3)),
            Case("8 channels in 4 groups (C/g = 2 is smaller than g)", (_randn(1, 8, 3, 3, seed=1), 4)),
            Case("6 channels in 2 groups, a 3x4 map", (_randn(1, 6, 3, 4, seed=2), 2)),
            Case("groups = 1: nothing moves", (_randn(1, 6, 2, 2, seed=3), 1)),
            Case("groups = C: one channel per group, nothing moves", (_randn(1, 6, 2, 2, seed=4), 6)),
            Case("a non-contiguous input (a transposed view of a tensor)",
                 (_randn(2, 12, 4, 5, seed=5).transpose(2, 3), 3)),
            Case("5 groups do not divide 12 channels", (_randn(1, 12, 2, 2, seed=6), 5), raises=ValueError)]


@exercise("03.2", "the inverse of the shuffle", reference=shuffle.channel_unshuffle,
          hint="Shuffling again with the same groups undoes it only when C = groups ** 2. The shuffle read a "
               "(groups, C // groups) matrix column by column: put the shuffled channels back into its columns.")
def _unshuffle_cases():
    return [Case("undo a shuffle of 12 channels in 3 groups", (_randn(2, 12, 3, 3, seed=10), 3)),
            Case("undo a shuffle of 8 channels in 4 groups", (_randn(1, 8, 3, 3, seed=11), 4)),
            Case("undo a shuffle of 18 channels in 3 groups, a 2x5 map", (_randn(1, 18, 2, 5, seed=12), 3)),
            Case("groups = 1: nothing to undo", (_randn(1, 6, 2, 2, seed=13), 1)),
            Case("5 groups do not divide 12 channels", (_randn(1, 12, 2, 2, seed=14), 5), raises=ValueError)]


@exercise("03.3", "the connectivity matrix of a grouped convolution", reference=shuffle.group_connectivity,
          hint="Channel c is in group c // (channels // groups); M[o, i] = 1 when o and i are in the same group "
               "(a block-diagonal matrix), as a torch.int tensor.")
def _connectivity_cases():
    return [Case("12 channels in 3 groups", (12, 3)),
            Case("8 channels in 2 groups", (8, 2)),
            Case("groups = 1: every output sees every input", (6, 1)),
            Case("groups = channels (depthwise): each output sees its own input", (5, 5)),
            Case("5 groups do not divide 12 channels", (12, 5), raises=ValueError)]


# ---------------------------------------------------------------- worked out by hand (computed from the matrices)

def _permutation(channels, groups):
    """Which input channel lands at each output position of the shuffle."""
    return shuffle.channel_shuffle(torch.arange(channels).view(1, channels, 1, 1), groups).flatten().tolist()


def _inputs_seen(channels, groups):
    """Inputs that output channel 0 of grouped 1x1 conv -> shuffle -> grouped 1x1 conv sees."""
    M = shuffle.group_connectivity(channels, groups)
    P = torch.zeros(channels, channels, dtype=torch.int)
    P[torch.arange(channels), _permutation(channels, groups)] = 1
    return int(((M @ P @ M) > 0)[0].sum())


exercise("03.4", "the shuffle's permutation for 8 channels in 4 groups", expected=lambda: _permutation(8, 4),
         hint="Deal the channels out one from each group in turn: groups are {0, 1}, {2, 3}, {4, 5}, {6, 7}.")
exercise("03.5", "how many of 32 inputs one output sees through two 8-group convolutions and a shuffle",
         expected=lambda: _inputs_seen(32, 8),
         hint="Output 0 sees the first layer's groups that feed its group of the second layer, and every input "
              "of each of those groups (section 3's rule).")
exercise("03.6", "the largest group count that one shuffle fully mixes for 40 channels",
         expected=lambda: max(g for g in valid_groups(40, 40) if _inputs_seen(40, g) == 40),
         hint="Full mixing needs C/g >= g, and g must divide C.")
