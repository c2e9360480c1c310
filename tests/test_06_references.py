"""The references of notebook 06's exercises (helpers.compress.quantization): equal to PyTorch's own
quantization arithmetic, and clear on bad input."""
import math

import pytest
import torch
from torch import nn

from helpers.compress.quantization import (affine_params, ao_warnings_off, fake_quantize, fixed_point, int8_linear,
                                           quantized_engine)


@pytest.mark.parametrize("x_min, x_max", [(-1.0, 2.0), (-2.0, 6.0), (0.5, 3.0), (-3.0, -0.5), (-0.37, 0.0),
                                          (0.0, 0.0), (-1e-3, 7.3)])
@pytest.mark.parametrize("bits", [8, 4])
def test_affine_params_are_pytorchs_min_max_observer(x_min, x_max, bits):
    observer = torch.ao.quantization.MinMaxObserver(quant_min=0, quant_max=2 ** bits - 1)
    observer(torch.tensor([x_min, x_max]))
    scale, zero_point = observer.calculate_qparams()
    ours = affine_params(x_min, x_max, bits)
    assert isinstance(ours[0], float) and isinstance(ours[1], int)
    assert math.isclose(ours[0], scale.item(), rel_tol=1e-6) and ours[1] == zero_point.item()


def test_affine_params_quantize_like_torch():
    x = torch.linspace(-1.3, 2.9, 101)
    scale, zero_point = affine_params(x.min(), x.max())
    with ao_warnings_off():
        theirs = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr().long()
    ours = torch.clamp(torch.round(x / scale) + zero_point, 0, 255).long()
    assert (ours - theirs).abs().max() <= 1 and (ours == theirs).float().mean() > 0.95  # x / s vs x * (1 / s)
    assert torch.quantize_per_tensor(torch.zeros(1), scale, zero_point, torch.quint8).dequantize().item() == 0.0


@pytest.mark.parametrize("args, says", [((2.0, -1.0), "must not exceed"), ((float("nan"), 1.0), "finite"),
                                        ((-1.0, float("inf")), "finite"), ((-1.0, 1.0, 1), "bits"),
                                        ((-1.0, 1.0, 8.0), "bits"), ((-1.0, 1.0, True), "bits")])
def test_affine_params_refuse_bad_input(args, says):
    with pytest.raises(ValueError, match=says):
        affine_params(*args)


def test_fake_quantize_is_pytorchs_per_channel_and_per_tensor():
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    w[3] *= 10  # one channel of large weights
    for bits in (8, 4, 2):
        q_max = 2 ** (bits - 1) - 1
        scales = w.abs().amax(dim=(1, 2, 3)) / q_max
        zeros = torch.zeros(16, dtype=torch.int32)
        torch.testing.assert_close(fake_quantize(w, bits),
                                   torch.fake_quantize_per_channel_affine(w, scales, zeros, 0, -q_max, q_max))
        torch.testing.assert_close(fake_quantize(w, bits, per_channel=False),
                                   torch.fake_quantize_per_tensor_affine(w, w.abs().max().item() / q_max, 0,
                                                                         -q_max, q_max))
        assert len(torch.unique(fake_quantize(w, bits)[0])) <= 2 * q_max + 1


def test_fake_quantize_keeps_a_channel_of_zeros():
    w = torch.randn(4, 6)
    w[1] = 0
    out = fake_quantize(w, 4)
    assert torch.isfinite(out).all() and (out[1] == 0).all()
    assert torch.equal(fake_quantize(torch.zeros(3, 3), 8, per_channel=False), torch.zeros(3, 3))


@pytest.mark.parametrize("w, bits, per_channel, error, says", [
    (torch.randn(4, 4), 1, True, ValueError, "bits must be"),
    (torch.randn(4, 4), 17, True, ValueError, "bits must be"),
    (torch.randn(4), 8, True, ValueError, "2 or more dimensions"),
    (torch.randint(0, 5, (4, 4)), 8, True, TypeError, "floating-point"),
    ([[0.5, 1.0]], 8, True, TypeError, "floating-point"),
])
def test_fake_quantize_refuses_bad_input(w, bits, per_channel, error, says):
    with pytest.raises(error, match=says):
        fake_quantize(w, bits, per_channel)


def test_fixed_point_keeps_30_bits_and_carries():
    M = torch.cat([torch.rand(1000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.999 + 1e-6,
                   torch.tensor([0.5, 0.25, 2.0 ** -20, 1 - 2.0 ** -40, 0.5 - 2.0 ** -42], dtype=torch.float64)])
    M0, n = fixed_point(M)
    assert M0.dtype == n.dtype == torch.int64 and M0.shape == n.shape == M.shape
    assert ((M0 >= 2 ** 30) & (M0 < 2 ** 31)).all()
    value = M0.double() * 2.0 ** -(31 + n).double()
    assert ((value - M).abs() <= 2.0 ** -(32 + n).double() * 1.0001).all()  # off by at most half a unit of M0
    assert M0[-2:].tolist() == [2 ** 30, 2 ** 30] and n[-2:].tolist() == [-1, 0]  # the carries
    assert fixed_point(torch.tensor(0.75, dtype=torch.float32)) == (torch.tensor(3 * 2 ** 29), torch.tensor(0))


@pytest.mark.parametrize("M, error, says", [(torch.tensor([0.5, 1.0]), ValueError, "0 < M < 1"),
                                            (torch.tensor([0.0]), ValueError, "0 < M < 1"),
                                            (torch.tensor([-0.2]), ValueError, "0 < M < 1"),
                                            (0.5, TypeError, "floating-point tensor"),
                                            (torch.tensor([1]), TypeError, "floating-point tensor")])
def test_fixed_point_refuses_bad_input(M, error, says):
    with pytest.raises(error, match=says):
        fixed_point(M)


@pytest.mark.parametrize("relu", [False, True])
def test_int8_linear_is_pytorchs_int8_layer_within_a_step(relu):
    import torch.ao.quantization as tq

    torch.backends.quantized.engine = quantized_engine()
    g = torch.Generator().manual_seed(1)
    layer = nn.Sequential(nn.Linear(40, 12), nn.ReLU()) if relu else nn.Sequential(nn.Linear(40, 12))
    wrapped = nn.Sequential(tq.QuantStub(), layer, tq.DeQuantStub()).eval()
    wrapped.qconfig = tq.get_default_qconfig(torch.backends.quantized.engine)
    x = torch.randn(256, 40, generator=g)
    with ao_warnings_off():
        if relu:
            wrapped[1] = tq.fuse_modules(wrapped[1], [["0", "1"]])
        prepared = tq.prepare(wrapped)
        prepared(x)
        int8 = tq.convert(prepared)
        seen = {}
        int8[1][0].register_forward_hook(lambda m, inputs, output: seen.update(x=inputs[0], y=output))
        int8(x)
    module, x_q, y_q = int8[1][0], seen["x"], seen["y"]
    w_q = module.weight()
    s_w = (w_q.q_per_channel_scales() if w_q.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
           else torch.full((12,), w_q.q_scale(), dtype=torch.float64))
    s_x, s_y = x_q.q_scale(), y_q.q_scale()
    q_b = torch.round(module.bias().double() / (s_w * s_x)).long()
    M0, n = fixed_point(s_w * s_x / s_y)
    q_y, acc = int8_linear(x_q.int_repr().long(), x_q.q_zero_point(), w_q.int_repr().long(), q_b, M0, n,
                           y_q.q_zero_point(), relu)
    assert q_y.dtype == acc.dtype == torch.int64 and q_y.shape == acc.shape == (256, 12)
    assert (q_y - y_q.int_repr().long()).abs().max() <= 1
    assert (q_y == y_q.int_repr().long()).float().mean() > 0.9
    assert acc.abs().max() < 2 ** 31


def test_int8_linear_rounds_halves_up_and_clamps():
    q_x, q_w = torch.tensor([[3, 5]]), torch.tensor([[1, 0], [1, 0], [100, 100]])
    M0, n = torch.full((3,), 2 ** 30), torch.ones(3, dtype=torch.long)  # M = 1/4
    q_y, acc = int8_linear(q_x, 1, q_w, torch.tensor([0, -4, 0]), M0, n, 10)
    assert acc.tolist() == [[2, -2, 600]]
    assert q_y.tolist() == [[11, 10, 160]]  # 2/4 = 0.5 -> 1; -2/4 = -0.5 -> 0 (halves up); 600/4 = 150
    assert int8_linear(q_x, 1, q_w, torch.tensor([0, -40, 0]), M0, n, 10, relu=True)[0].tolist() == [[11, 10, 160]]
    assert int8_linear(q_x, 1, q_w, torch.tensor([0, 0, 900]), M0, n, 10)[0][0, 2] == 255


@pytest.mark.parametrize("q_x, q_w, error, says", [
    (torch.ones(2, 4, dtype=torch.long), torch.ones(3, 5, dtype=torch.long), ValueError, "K = 4 features"),
    (torch.ones(2, 4, dtype=torch.long), torch.ones(4, dtype=torch.long), ValueError, "C_out, K"),
    (torch.ones(2, 4), torch.ones(3, 4, dtype=torch.long), TypeError, "q_x must be an integer tensor"),
    (torch.ones(2, 4, dtype=torch.long), [[1, 2, 3, 4]], TypeError, "q_w must be an integer tensor"),
])
def test_int8_linear_refuses_bad_input(q_x, q_w, error, says):
    M0, n = fixed_point(torch.full((3,), 0.01, dtype=torch.float64))
    with pytest.raises(error, match=says):
        int8_linear(q_x, 0, q_w, torch.zeros(3, dtype=torch.long), M0, n, 0)
