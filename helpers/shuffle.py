"""Channel shuffle (ShuffleNet), its inverse, and which channels a grouped convolution connects.

The references of notebook 03's exercises, computed by PyTorch itself: ``F.channel_shuffle`` (the
function behind ``nn.ChannelShuffle``) and its grouped convolution (``F.conv2d(..., groups=g)``). The notebook builds each
from scratch (reshape -> transpose -> reshape; a block-diagonal matrix). Each function says what is
wrong with its input before PyTorch does, in the same words as :func:`helpers.check_groups`.
"""
import torch
import torch.nn.functional as F

from .convs import check_groups


def _channels(x, groups):
    """The channel count of ``x`` ([N, C, H, W]), after checking that ``groups`` divides it."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a tensor [N, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise ValueError(f"groups must be a whole number, got {groups!r}")
    check_groups(x.shape[1], x.shape[1], groups)
    return x.shape[1]


def channel_shuffle(x, groups):
    """ShuffleNet's channel shuffle: position ``i * groups + j`` of the output is channel ``j * (C / groups) + i``.

    The channels, seen as a ``groups x (C / groups)`` matrix (row j = group j), read column by column:
    one channel from each group in turn. Raises a ValueError unless ``groups`` divides C.
    """
    _channels(x, groups)
    return F.channel_shuffle(x, groups)


def channel_unshuffle(x, groups):
    """The inverse of :func:`channel_shuffle` with ``groups``: a shuffle with ``C / groups`` groups.

    ``channel_unshuffle(channel_shuffle(x, g), g)`` is ``x``. Raises a ValueError unless ``groups`` divides C.
    """
    channels = _channels(x, groups)
    return F.channel_shuffle(x, channels // groups)


def group_connectivity(channels, groups):
    """``M[o, i] = 1`` when output ``o`` of ``nn.Conv2d(channels, channels, 1, groups=groups)`` sees input ``i``.

    Read off PyTorch's grouped convolution itself: with every weight 1, feeding it input channel ``i``
    alone (a one-hot input) lights up exactly the outputs that see ``i``. A ``[channels, channels]``
    tensor of 0s and 1s, dtype ``torch.int``. Raises a ValueError unless ``groups`` divides ``channels``.
    """
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise ValueError(f"groups must be a whole number, got {groups!r}")
    check_groups(channels, channels, groups)
    ones = torch.ones(channels, channels // groups, 1, 1)             # the weight of a 1x1 grouped conv, all 1
    one_hot = torch.eye(channels).view(channels, channels, 1, 1)     # input i: channel i alone
    reached = F.conv2d(one_hot, ones, groups=groups)[:, :, 0, 0]     # reached[i, o]
    return (reached.T != 0).int()
