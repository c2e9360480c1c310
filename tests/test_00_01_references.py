"""The references of notebooks 00 and 01's exercises: conv_macs, layer_calls, median_iqr (helpers.measure),
conv_output_size, dilate_kernel, receptive_field (helpers.convs), checked against PyTorch, bad input included."""
import itertools
import statistics

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers import count_macs, small_vgg
from helpers.convs import conv_output_size, dilate_kernel, receptive_field
from helpers.measure import Timing, conv_macs, layer_calls, median_iqr

# ---------------------------------------------------------------- conv_macs


@pytest.mark.parametrize("conv, shape", [
    (nn.Conv2d(6, 30, 3), (1, 6, 112, 112)),
    (nn.Conv2d(6, 30, 3, groups=3), (2, 6, 20, 17)),
    (nn.Conv2d(16, 8, (3, 5), stride=2, padding=(1, 2), dilation=(2, 1)), (3, 16, 15, 20)),
    (nn.Conv2d(8, 8, 3, stride=(1, 2), groups=8, bias=False), (1, 8, 9, 10)),
    (nn.Conv2d(4, 4, 3, padding="same", dilation=2), (1, 4, 9, 9)),
    (nn.Conv2d(4, 4, 3, padding="valid"), (1, 4, 9, 9)),
    (nn.Conv2d(3, 5, 5, dilation=2), (1, 3, 9, 9)),  # the dilated kernel exactly fills the input: 1x1 output
])
def test_conv_macs_is_what_count_macs_counts(conv, shape):
    assert conv_macs(conv, shape) == count_macs(conv, torch.zeros(shape))
    assert conv_macs(conv, torch.Size(shape)) == conv_macs(conv, shape)


def test_conv_macs_refuses_bad_input():
    conv = nn.Conv2d(6, 30, 3)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        conv_macs(nn.Linear(6, 30), (1, 6, 8, 8))
    with pytest.raises(ValueError, match="6 channels but the convolution expects 3"):
        conv_macs(nn.Conv2d(3, 30, 3), (1, 6, 8, 8))
    with pytest.raises(ValueError, match="no output"):
        conv_macs(nn.Conv2d(6, 30, 3, dilation=4), (1, 6, 8, 8))
    for shape in [(6, 8, 8), (1, 6, 8.0, 8), (1, 6, 0, 8), 6, "1x6x8x8"]:
        with pytest.raises(ValueError, match="input_shape"):
            conv_macs(conv, shape)


# ---------------------------------------------------------------- layer_calls

def test_layer_calls_counts_every_call_of_every_leaf_and_removes_its_hooks():
    bottleneck = torchvision.models.resnet.Bottleneck(16, 4).train()
    calls = layer_calls(bottleneck, torch.randn(1, 16, 8, 8))
    assert [type(m).__name__ for m, _ in calls] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["Conv2d", "BatchNorm2d", "ReLU"]
    assert sum(m is bottleneck.relu for m, _ in calls) == 3, "one ReLU module, called three times"
    assert [n for _, n in calls][:3] == [4 * 8 * 8] * 3
    assert all(not m._forward_hooks for m in bottleneck.modules()), "no hook is left behind"
    assert all(m.training for m in bottleneck.modules()), "every module gets its own mode back"
    assert len(layer_calls(torchvision.models.resnet50().eval(), torch.randn(1, 3, 224, 224))) == 158
    conv = nn.Conv2d(1, 2, 3)
    assert [(m, n) for m, n in layer_calls(conv, torch.randn(1, 1, 5, 5))] == [(conv, 2 * 3 * 3)], "a bare layer is its own leaf"


def test_layer_calls_leaves_batchnorm_statistics_alone_and_refuses_bad_input():
    net = small_vgg().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    layer_calls(net, torch.randn(2, 1, 28, 28))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(TypeError, match="nn.Module"):
        layer_calls(lambda x: x, torch.randn(1))
    with pytest.raises(ValueError, match="example input"):
        layer_calls(net)
    with pytest.raises(ValueError, match="cannot run"):
        layer_calls(net, torch.randn(1, 3, 28, 28))
    assert all(not m._forward_hooks for m in net.modules()), "hooks are removed even when the pass fails"


# ---------------------------------------------------------------- median_iqr

def test_median_iqr_is_what_timing_reports():
    times = [5.1, 1.2, 1.0, 1.1, 1.3, 0.9, 1.0, 1.2]
    median, iqr = median_iqr(times)
    q1, _, q3 = statistics.quantiles(times, n=4)
    assert median == statistics.median(times) == 1.15 and iqr == pytest.approx(q3 - q1)
    timing = Timing(times, threads=1)
    assert (timing.median, timing.iqr) == (median, iqr)
    assert median_iqr([0.004]) == (0.004, 0.0) and median_iqr((2.0, 2.0, 2.0)) == (2.0, 0.0)


def test_median_iqr_refuses_bad_input():
    with pytest.raises(ValueError, match="empty"):
        median_iqr([])
    with pytest.raises(ValueError, match="negative"):
        median_iqr([0.001, -0.002])


# ---------------------------------------------------------------- conv_output_size

def test_conv_output_size_is_the_size_conv2d_produces():
    for n, k, stride, padding, dilation in itertools.product((5, 8, 15), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2, 3)):
        if dilation * (k - 1) + 1 > n + 2 * padding:
            with pytest.raises(ValueError, match="no output"):
                conv_output_size(n, k, stride, padding, dilation)
            continue
        conv = nn.Conv2d(1, 1, k, stride=stride, padding=padding, dilation=dilation)
        assert conv_output_size(n, k, stride, padding, dilation) == conv(torch.zeros(1, 1, n, n)).shape[-1]


@pytest.mark.parametrize("kwargs", [dict(stride=0), dict(padding=-1), dict(dilation=0), dict(k=0), dict(n=0),
                                    dict(n=28.0), dict(stride=True)])
def test_conv_output_size_refuses_bad_input(kwargs):
    with pytest.raises(ValueError, match="must be a whole number"):
        conv_output_size(**{"n": 28, "k": 3, **kwargs})


# ---------------------------------------------------------------- dilate_kernel

@pytest.mark.parametrize("shape, d", [((4, 3, 3, 3), 2), ((2, 2, 3, 5), 3), ((1, 1, 1, 1), 4), ((3, 1, 3, 3), 1)])
def test_dilate_kernel_gives_the_dilated_convolution(shape, d):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=g, dtype=torch.float64)
    x = torch.randn(2, shape[1], 17, 16, generator=g, dtype=torch.float64)
    spread = dilate_kernel(weight, d)
    assert spread.shape[-2:] == (shape[2] + (shape[2] - 1) * (d - 1), shape[3] + (shape[3] - 1) * (d - 1))
    assert spread.dtype == weight.dtype and int((spread != 0).sum()) == int((weight != 0).sum())
    torch.testing.assert_close(F.conv2d(x, spread, padding=d), F.conv2d(x, weight, padding=d, dilation=d))


def test_dilate_kernel_refuses_bad_input():
    with pytest.raises(TypeError, match="tensor"):
        dilate_kernel([[1.0, 2.0]], 2)
    with pytest.raises(ValueError, match="4-D"):
        dilate_kernel(torch.ones(3, 3), 2)
    with pytest.raises(ValueError, match="dilation must be a whole number"):
        dilate_kernel(torch.ones(1, 1, 3, 3), 0)


# ---------------------------------------------------------------- receptive_field

def _measured_field(layers, size=64):
    """Width of the input region one output pixel depends on, from autograd (ones kernels, no padding)."""
    x = torch.zeros(1, 1, size, size, requires_grad=True)
    y = x
    for k, d, s in layers:
        y = F.conv2d(y, torch.ones(1, 1, k, k), stride=s, dilation=d)
    y[0, 0, 0, 0].backward()
    used = x.grad[0, 0, 0].nonzero().flatten()
    return int(used.max() - used.min() + 1)


@pytest.mark.parametrize("layers", [
    [(3, 1, 1)], [(3, 1, 1), (3, 2, 1), (3, 4, 1)], [(3, 1, 2), (3, 1, 2), (3, 2, 1)],
    [(7, 1, 2), (3, 1, 2), (3, 3, 1), (5, 1, 1)], [(2, 1, 2), (2, 1, 2), (2, 1, 2)], [(1, 1, 2), (3, 2, 1)],
])
def test_receptive_field_is_the_region_autograd_finds(layers):
    assert receptive_field(layers) == _measured_field(layers)


def test_receptive_field_of_nothing_and_of_bad_input():
    assert receptive_field([]) == 1
    for bad in ([(3, 1)], [(3, 0, 1)], [(3, 1, 0)], [3], [(3.0, 1, 1)]):
        with pytest.raises(ValueError):
            receptive_field(bad)
