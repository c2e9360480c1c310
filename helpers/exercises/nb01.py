"""Notebook 01 (dilated convolution): the output size, the dilated (zero-filled) kernel, the receptive field
of a stack, and the pixels a gridded stack really uses, worked out."""
import torch

from .. import convs
from . import Case, exercise


@exercise("01.1", "the output size of a (dilated) convolution", reference=convs.conv_output_size,
          hint="The dilated kernel spans d(k - 1) + 1 pixels; count the positions, one every s pixels, where "
               "it fits inside the padded input (n + 2p wide).")
def _output_size_cases():
    return [Case("n=28, k=3: no padding, no dilation", (28, 3)),
            Case("dilation 2, no padding", (28, 3), {"dilation": 2}),
            Case("'same' padding p = d at dilation 4", (32, 3), {"padding": 4, "dilation": 4}),
            Case("stride 2 on an odd size (rounds down)", (15, 3), {"stride": 2, "padding": 1}),
            Case("stride 3, dilation 2, a 5x5 kernel", (40, 5), {"stride": 3, "padding": 1, "dilation": 2}),
            Case("the dilated kernel exactly as wide as the input: one output", (5, 3), {"dilation": 2}),
            Case("the dilated kernel wider than the padded input: no output → ValueError", (4, 3), {"dilation": 2}, raises=ValueError),
            Case("stride 0 → ValueError", (28, 3), {"stride": 0}, raises=ValueError),
            Case("a negative padding → ValueError", (28, 3), {"padding": -1}, raises=ValueError)]


@exercise("01.2", "a dilated kernel: the taps spread out, zeros in between", reference=convs.dilate_kernel,
          hint="Each side becomes k + (k - 1)(d - 1): no zeros after the last tap. Every d-th position holds a "
               "weight, the others are zeros of the weight's dtype.")
def _dilate_cases():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 4, 3, 3, generator=g)
    return [Case("a 8x4x3x3 kernel at dilation 2", (weight, 2)),
            Case("dilation 3", (weight, 3)),
            Case("dilation 1 leaves the kernel as it is", (weight, 1)),
            Case("a 3x5 kernel (not square)", (torch.randn(2, 3, 3, 5, generator=g), 2)),
            Case("a 1x1 kernel has no gaps to fill", (torch.randn(4, 4, 1, 1, generator=g), 4)),
            Case("a float64 kernel keeps its dtype", (torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64), 2)),
            Case("dilation 0 → ValueError", (weight, 0), raises=ValueError),
            Case("a 2-D weight (not [C_out, C_in, k, k]) → ValueError", (torch.randn(3, 3, generator=g), 2), raises=ValueError)]


@exercise("01.3", "the receptive field of a stack of convolutions", reference=convs.receptive_field,
          hint="Keep the jump (the product of the strides of the layers below); each layer adds d(k - 1) x jump, "
               "and only then multiplies the jump by its own stride.")
def _field_cases():
    return [Case("three 3x3 layers, dilations 1, 2, 4", ([(3, 1, 1), (3, 2, 1), (3, 4, 1)],)),
            Case("a single 3x3 layer", ([(3, 1, 1)],)),
            Case("two stride-2 layers, then a dilated one", ([(3, 1, 2), (3, 1, 2), (3, 2, 1)],)),
            Case("a 7x7 stride-2 stem, then a mix", ([(7, 1, 2), (3, 1, 2), (3, 3, 1), (5, 1, 1)],)),
            Case("the last layer's stride does not widen its own field", ([(3, 1, 1), (3, 1, 2)],)),
            Case("no layers at all: one pixel", ([],)),
            Case("a stride of 0 → ValueError", ([(3, 1, 1), (3, 1, 0)],), raises=ValueError),
            Case("a layer given as (k, d) without its stride → ValueError", ([(3, 1)],), raises=ValueError)]


def _pixels_used(k, rates):
    """Input pixels (2-D) of the receptive field that reach the centre output of a stack of k x k convolutions."""
    offsets = {0}
    for d in rates:
        offsets = {o + d * (i - k // 2) for o in offsets for i in range(k)}
    return len(offsets) ** 2  # the footprint is separable: rows used x columns used


exercise("01.4", "the pixels four 3x3 convolutions at dilation 3 really use",
         expected=lambda: _pixels_used(3, [3, 3, 3, 3]),
         hint="Every layer steps by 3, so every offset it reaches is a multiple of 3: count the multiples of 3 "
              "in the field along one axis, then square.")
