"""Small checks for convolution settings that readers change with sliders.

A grouped convolution needs both channel counts to divide by the number of groups. PyTorch says so
in its own words when the layer is built; these helpers say it before, in a reader's terms, and
list the values that would work.
"""
import math


def valid_groups(in_channels, out_channels):
    """Every group count that divides both channel counts: the divisors of their greatest common divisor."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    common = math.gcd(in_channels, out_channels)
    return [g for g in range(1, common + 1) if common % g == 0]


def check_groups(in_channels, out_channels, groups):
    """Raise a clear ValueError unless ``groups`` divides both channel counts; returns ``groups``."""
    valid = valid_groups(in_channels, out_channels)
    if groups not in valid:
        raise ValueError(
            f"groups={groups!r} does not work with {in_channels} input and {out_channels} output channels: "
            f"each group needs a whole number of both. Choose one of {valid}."
        )
    return groups
