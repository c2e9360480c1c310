"""helpers.compress.llm: group-wise round to nearest, packing, the packed file, calibration statistics, GPTQ,
AWQ-style scaling, SmoothQuant and W8A8 simulation, bad input included."""
import copy

import pytest
import torch
from torch import nn

from helpers import lm, model_size
from helpers.compress import llm

TINY = lm.GPTConfig(context=16, width=32, layers=1, heads=2)


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return lm.GPT(TINY).eval()


@pytest.fixture(scope="module")
def windows():
    return torch.randint(0, 256, (8, 17), generator=gen(1))


# ---------------------------------------------------------------- round to nearest

def test_a_group_by_hand():
    w = torch.tensor([[-1.0, 0.5, 2.0, 0.0]])
    q, scale, zero = llm.quantize_groups(w, 2, 4)  # range [-1, 2], 4 levels: step 1, zero point 1
    assert scale.dtype == torch.float16 and scale.item() == 1.0 and zero.item() == 1
    assert q.tolist() == [[0, 1, 3, 1]]  # round(0.5) = 0: ties go to the even integer
    assert llm.dequantize_groups(q, scale, zero).tolist() == [[-1.0, 0.0, 2.0, 0.0]]


@pytest.mark.parametrize("bits, group_size", [(8, None), (4, 16), (3, 8), (2, 32)])
def test_round_to_nearest_stays_on_its_grid(bits, group_size):
    w = torch.randn(6, 32, generator=gen(0))
    q, scale, zero = llm.quantize_groups(w, bits, group_size)
    groups = 32 // (group_size or 32)
    assert q.shape == w.shape and q.dtype == zero.dtype == torch.uint8 and scale.shape == (6, groups)
    assert int(q.max()) <= 2 ** bits - 1
    w_hat = llm.fake_quantize_groups(w, bits, group_size)
    step = scale.float().repeat_interleave(32 // groups, 1)
    assert ((w_hat - w).abs() <= step / 2 + 1e-6).all()  # within half a step: min and max are inside the grid
    zeros = torch.zeros_like(w)
    assert torch.equal(llm.fake_quantize_groups(zeros, bits, group_size), zeros)  # no 0 / 0
    per_channel = llm.quantize_groups(w, bits, None)
    assert per_channel[1].shape == (6, 1)


def test_smaller_groups_and_more_bits_err_less():
    w = torch.randn(16, 64, generator=gen(2))
    err = {(b, g): (llm.fake_quantize_groups(w, b, g) - w).norm().item() for b in (3, 4) for g in (None, 16)}
    assert err[3, 16] < err[3, None] and err[4, None] < err[3, None] and err[4, 16] < err[4, None]


@pytest.mark.parametrize("bits", [1, 9, 4.0, True, "4"])
def test_bits_outside_2_to_8_are_refused(bits):
    with pytest.raises(ValueError, match="bits"):
        llm.quantize_groups(torch.randn(2, 8), bits, None)
    with pytest.raises(ValueError, match="bits"):
        llm.bits_per_weight(bits, 64)


def test_round_to_nearest_is_pytorchs_per_channel_fake_quantization_group_by_group():
    w = torch.randn(16, 64, generator=gen(14))
    w[3, 5] = 0.0625 * 13 / 2  # a few exact halves: ties must round as PyTorch rounds them
    for bits, group in ((8, None), (4, 16), (3, 8), (2, 32)):
        q, scale, zero = llm.quantize_groups(w, bits, group)
        rows = w.reshape(-1, group or 64)
        theirs = torch.fake_quantize_per_channel_affine(rows, scale.float().flatten(), zero.int().flatten(), 0, 0,
                                                        2 ** bits - 1).reshape(w.shape)
        assert torch.equal(llm.dequantize_groups(q, scale, zero), theirs)


@pytest.mark.parametrize("group_size", [3, 0, -8, 2.0])
def test_a_group_size_that_does_not_divide_the_row_is_refused(group_size):
    with pytest.raises(ValueError, match="group_size"):
        llm.quantize_groups(torch.randn(2, 8), 4, group_size)


def test_a_weight_must_be_a_2d_float_tensor():
    for bad in (torch.randn(8), torch.randint(0, 3, (2, 8)), [[1.0]]):
        with pytest.raises(TypeError, match="2-D float"):
            llm.quantize_groups(bad, 4, None)
    with pytest.raises(ValueError, match="do not fit"):
        llm.dequantize_groups(torch.zeros(2, 8, dtype=torch.uint8), torch.ones(2, 3), torch.zeros(2, 3))


def test_bits_per_weight():
    assert llm.bits_per_weight(4, 128) == 4 + 20 / 128
    assert llm.bits_per_weight(8, 256) == 8 + 24 / 256
    assert llm.bits_per_weight(3, 64, scale_bits=32) == 3 + 35 / 64
    with pytest.raises(ValueError, match="group_size"):
        llm.bits_per_weight(4, 0)


# ---------------------------------------------------------------- packing

def test_int4_packing_by_hand_and_round_trip():
    assert llm.pack_int4(torch.tensor([1, 2, 15, 0])).tolist() == [0x21, 0x0F]
    q = torch.randint(0, 16, (5, 12), generator=gen(3), dtype=torch.uint8)
    packed = llm.pack_int4(q)
    assert packed.shape == (5, 6) and packed.dtype == torch.uint8
    assert torch.equal(llm.unpack_int4(packed), q)
    assert torch.equal(llm.pack_bits(q, 4), packed.flatten())  # the same order


def test_int4_packing_refuses_bad_codes():
    with pytest.raises(ValueError, match="even"):
        llm.pack_int4(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="0..15"):
        llm.pack_int4(torch.tensor([1, 16]))
    with pytest.raises(ValueError, match="0..15"):
        llm.pack_int4(torch.tensor([-1, 2]))
    with pytest.raises(TypeError, match="integer"):
        llm.pack_int4(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError):
        llm.unpack_int4(torch.tensor([1, 2]))


@pytest.mark.parametrize("bits", range(2, 9))
def test_any_width_packs_into_the_fewest_bytes_and_back(bits):
    q = torch.randint(0, 2 ** bits, (37,), generator=gen(bits), dtype=torch.uint8)
    packed = llm.pack_bits(q, bits)
    assert len(packed) == -(-37 * bits // 8)
    assert torch.equal(llm.unpack_bits(packed, bits, 37), q)
    with pytest.raises(ValueError, match="fewer than"):
        llm.unpack_bits(packed, bits, 38 + 8 // bits)


def test_a_packed_model_computes_with_its_weights_and_its_file_loads_back(tiny, windows):
    quantized, rtn = {}, copy.deepcopy(tiny)
    for name, m in rtn.named_modules():
        if isinstance(m, nn.Linear):
            quantized[name] = llm.QuantizedWeight(*llm.quantize_groups(m.weight, 3, 16), 3)
            m.weight.data = quantized[name].dequantize()
    packed = llm.pack_model(tiny, quantized)
    x = windows[:, :-1]
    with torch.no_grad():
        torch.testing.assert_close(packed(x), rtn(x))
    data = llm.save_packed(packed)
    back = llm.load_packed(data, lm.GPT(TINY))
    for name, qw in quantized.items():
        again = back.get_submodule(name).unpacked()
        assert torch.equal(again.q, qw.q) and torch.equal(again.zero, qw.zero) and torch.equal(again.scale, qw.scale)
    with torch.no_grad():
        torch.testing.assert_close(back(x), rtn(x), atol=2e-2, rtol=2e-2)  # embeddings went through fp16
    assert len(data) < model_size(tiny) / 2
    with pytest.raises(KeyError, match="not a Linear"):
        llm.pack_model(tiny, {"wte": quantized["blocks.0.attn.qkv"]})
    with pytest.raises(TypeError):
        llm.PackedLinear.from_quantized(torch.zeros(2, 2))


# ---------------------------------------------------------------- calibration

def test_layer_statistics_are_sums_over_the_tokens(tiny, windows):
    seen = []
    layer = tiny.blocks[0].mlp.fc2
    handle = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        tiny(windows[:, :-1])
    handle.remove()
    x = torch.cat(seen).double()
    stats = llm.layer_statistics(tiny, windows, ["blocks.0.mlp.fc2"], batch_size=3)["blocks.0.mlp.fc2"]
    assert stats.tokens == x.shape[0] == 8 * 16
    torch.testing.assert_close(stats.hessian, x.T @ x, rtol=1e-5, atol=1e-4)  # float32 products
    torch.testing.assert_close(stats.absmax, x.abs().amax(0).float())
    torch.testing.assert_close(stats.absmean, x.abs().mean(0).float())
    assert stats.hessian.dtype == torch.float64
    early = llm.layer_statistics(tiny, windows, ["blocks.0.attn.qkv"], stop_after=True)["blocks.0.attn.qkv"]
    torch.testing.assert_close(early.hessian, llm.layer_statistics(tiny, windows)["blocks.0.attn.qkv"].hessian)


def test_an_empty_calibration_set_or_an_unknown_layer_is_refused(tiny, windows):
    with pytest.raises(ValueError, match="empty"):
        llm.layer_statistics(tiny, windows[:0])
    with pytest.raises(ValueError, match="empty"):
        llm.quantize_model(tiny, "gptq", 4, None, windows[:0])
    with pytest.raises(KeyError, match="not Linear"):
        llm.layer_statistics(tiny, windows, ["wte"])


# ---------------------------------------------------------------- GPTQ

def correlated_inputs(n=400, d=8, seed=4):
    x = torch.randn(n, d, generator=gen(seed), dtype=torch.float64)
    x[:, 1] += 0.9 * x[:, 0]
    x[:, 5] += x[:, 2] - x[:, 4]
    return x


def test_a_gptq_step_is_the_least_squares_fix_of_the_later_columns():
    x, w = correlated_inputs(), torch.randn(5, 8, generator=gen(5), dtype=torch.float64)
    U = llm.inverse_hessian_factor(x.T @ x, damp=0.0)
    torch.testing.assert_close(U.T @ U, torch.linalg.inv(x.T @ x))

    def rounded(column):
        return torch.round(column * 2) / 2

    for i in (0, 3):
        got = llm.gptq_step(w, U, i, rounded)
        # brute force: columns i+1.. re-fitted by least squares to the outputs that columns i.. made before
        target = w[:, i:] @ x[:, i:].T - rounded(w[:, i])[:, None] * x[:, i][None, :]
        best = torch.linalg.lstsq(x[:, i + 1:], target.T).solution.T
        torch.testing.assert_close(got[:, i + 1:], best)
        assert torch.equal(got[:, :i], w[:, :i]) and torch.equal(got[:, i], rounded(w[:, i]))
    assert torch.equal(llm.gptq_step(w, U, 7, rounded)[:, :7], w[:, :7])  # the last column changes nothing else
    with pytest.raises(ValueError, match="U must be"):
        llm.gptq_step(w, U[:4, :4], 0, rounded)
    with pytest.raises(IndexError):
        llm.gptq_step(w, U, 8, rounded)


def naive_gptq(w, h, bits, group_size):
    """GPTQ as OBQ writes it: the inverse Hessian of the columns left, updated after every column (no Cholesky)."""
    W = w.double().clone()
    h = h.double().clone()
    h.diagonal().add_(0.01 * h.diagonal().mean())
    hinv = torch.linalg.inv(h)
    g = group_size or w.shape[1]
    for i in range(w.shape[1]):
        if i % g == 0:
            _, s, z = llm.quantize_groups(W[:, i:i + g].float(), bits, None)
            s, z = s.double()[:, 0], z.double()[:, 0]
        q = (torch.clamp(torch.round(W[:, i] / s) + z, 0, 2 ** bits - 1) - z) * s
        err = (W[:, i] - q) / hinv[i, i]
        W[:, i:] -= err[:, None] * hinv[i, i:][None, :]
        W[:, i] = q
        hinv = hinv - hinv[:, i:i + 1] @ hinv[i:i + 1, :] / hinv[i, i]  # remove column i
    return W


@pytest.mark.parametrize("group_size", [None, 4])
def test_gptq_in_cholesky_form_equals_the_naive_form_and_beats_rtn(group_size):
    x = torch.randn(400, 8, generator=gen(12), dtype=torch.float64) @ torch.randn(8, 8, generator=gen(13), dtype=torch.float64)
    w = torch.randn(6, 8, generator=gen(6))
    h = x.T @ x
    qw = llm.gptq(w, h, 3, group_size)
    torch.testing.assert_close(qw.dequantize().double(), naive_gptq(w, h, 3, group_size), atol=1e-5, rtol=1e-5)
    assert qw.q.dtype == torch.uint8 and qw.scale.shape == (6, 8 // (group_size or 8))
    rtn = llm.fake_quantize_groups(w, 3, group_size)
    assert llm.relative_output_error(w, qw.dequantize(), h) < llm.relative_output_error(w, rtn, h)


def test_gptq_with_uncorrelated_inputs_is_round_to_nearest():
    w = torch.randn(4, 8, generator=gen(7))
    h = torch.diag(torch.rand(8, generator=gen(8), dtype=torch.float64) + 0.5)  # a diagonal Hessian: no error to spread
    assert torch.equal(llm.gptq(w, h, 4, None).dequantize(), llm.fake_quantize_groups(w, 4, None))


def test_gptq_zeroes_dead_inputs_and_refuses_bad_input():
    x, w = correlated_inputs(), torch.randn(3, 8, generator=gen(9))
    x[:, 6] = 0.0
    h = x.T @ x
    assert (llm.gptq(w, h, 4, None).dequantize()[:, 6] == 0).all()
    with pytest.raises(ValueError, match="bits"):
        llm.gptq(w, h, 1, None)
    with pytest.raises(ValueError, match="group_size"):
        llm.gptq(w, h, 4, 3)
    with pytest.raises(ValueError, match="Hessian"):
        llm.gptq(w, h[:4, :4], 4, None)


# ---------------------------------------------------------------- AWQ-style scaling, SmoothQuant, W8A8

def test_awq_never_does_worse_than_rtn_on_its_own_objective(tiny, windows):
    stats = llm.layer_statistics(tiny, windows)
    for name in ("blocks.0.attn.qkv", "blocks.0.mlp.fc2"):
        w = tiny.get_submodule(name).weight
        qw = llm.awq_scales(w, stats[name], 3, 16, grid=10)
        rtn = llm.fake_quantize_groups(w, 3, 16)
        assert qw.info["errors"][0.0] == pytest.approx(llm.relative_output_error(w, rtn, stats[name].hessian))
        assert qw.info["alpha"] in qw.info["errors"] and len(qw.info["errors"]) == 10
        assert min(qw.info["errors"].values()) == qw.info["errors"][qw.info["alpha"]]
        s = qw.input_scale.float()
        assert s.max() * s.min() == pytest.approx(1.0, rel=2e-3)  # normalised
    with pytest.raises(ValueError, match="input channels"):
        llm.awq_scales(torch.randn(4, 5), stats["blocks.0.attn.qkv"], 3)


def test_smooth_scales():
    a, w = torch.tensor([4.0, 1.0, 0.0, 9.0]), torch.tensor([1.0, 4.0, 2.0, 0.0])
    s = llm.smooth_scales(a, w, 0.5)
    torch.testing.assert_close(s, torch.tensor([2.0, 0.5, 1e-5, 3.0 / 1e-5 ** 0.5]))
    torch.testing.assert_close(llm.smooth_scales(a, w, 1.0), a.clamp(min=1e-5))
    for alpha in (-0.1, 1.5, "0.5"):
        with pytest.raises(ValueError, match="alpha"):
            llm.smooth_scales(a, w, alpha)
    with pytest.raises(ValueError, match="same length"):
        llm.smooth_scales(a, w[:3])


def test_smoothing_moves_the_range_without_changing_the_product():
    x = torch.randn(10, 6, generator=gen(10)) * torch.tensor([1.0, 1, 30, 1, 1, 1])
    w = torch.randn(4, 6, generator=gen(11))
    s = llm.smooth_scales(x.abs().amax(0), w.abs().amax(0), 0.5)
    torch.testing.assert_close((x / s) @ (w * s).T, x @ w.T)
    assert (x / s).abs().amax(0).max() / (x / s).abs().amax(0).min() < x.abs().amax(0).max() / x.abs().amax(0).min()


def test_symmetric_fake_quantization_and_w8a8(tiny, windows):
    x = torch.tensor([[-1.5, 0.5], [0.25, 2.0]])
    assert llm.fake_quantize_symmetric(x, 2).tolist() == [[-2.0, 0.0], [0.0, 2.0]]  # levels -2, 0, 2
    assert llm.fake_quantize_symmetric(x, 8, dim=-1)[0].tolist() == pytest.approx([-1.5, 0.5], abs=1e-2)
    sim = llm.w8a8_model(tiny, windows, alpha=0.5)
    assert sum(isinstance(m, llm.SimulatedW8A8) for m in sim.modules()) == 4
    with torch.no_grad():
        y, y_sim = tiny(windows[:, :-1]), sim(windows[:, :-1])
    assert (y_sim - y).norm() / y.norm() < 0.05
    with pytest.raises(ValueError, match="calibration"):
        llm.w8a8_model(tiny, alpha=0.5)


def test_gptq_goes_block_by_block():
    assert llm._blocks(["blocks.0.attn.qkv", "blocks.0.mlp.fc2", "blocks.1.attn.qkv", "head"]) == [
        ["blocks.0.attn.qkv", "blocks.0.mlp.fc2"], ["blocks.1.attn.qkv"], ["head"]]


def test_quantize_model(tiny, windows):
    rtn, quantized = llm.quantize_model(tiny, "rtn", 4, 16)
    assert set(quantized) == {n for n, m in tiny.named_modules() if isinstance(m, nn.Linear)}
    assert torch.equal(rtn.blocks[0].mlp.fc1.weight, llm.fake_quantize_groups(tiny.blocks[0].mlp.fc1.weight, 4, 16))
    assert not torch.equal(tiny.blocks[0].mlp.fc1.weight, rtn.blocks[0].mlp.fc1.weight)  # the original is untouched
    for method in ("gptq", "awq"):
        model, _ = llm.quantize_model(tiny, method, 4, 16, windows)
        with torch.no_grad():
            assert torch.isfinite(model(windows[:, :-1])).all()
    with pytest.raises(ValueError, match="method"):
        llm.quantize_model(tiny, "smooth", 4)
    with pytest.raises(ValueError, match="calibration"):
        llm.quantize_model(tiny, "gptq", 4)
    with pytest.raises(ValueError, match="group_size"):
        llm.quantize_model(tiny, "rtn", 4, 24)  # 24 divides no row of 32 or 128


def test_tensor_bytes_counts_what_a_quantized_tensor_holds():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    layer = nn.Linear(64, 32, bias=False)
    assert llm.tensor_bytes(layer) == 64 * 32 * 4
    quantize_(layer, Int8WeightOnlyConfig())
    assert 64 * 32 <= llm.tensor_bytes(layer) <= 64 * 32 + 32 * 8


@pytest.mark.parametrize("group_size, block", [(None, 3), (4, 3), (2, 4), (8, 128)])
def test_lazy_batches_give_the_column_by_column_result(group_size, block):
    x = torch.randn(300, 16, generator=gen(15), dtype=torch.float64) @ torch.randn(16, 16, generator=gen(16), dtype=torch.float64)
    w = torch.randn(5, 16, generator=gen(17))
    lazy = llm.gptq(w, x.T @ x, 3, group_size, block=block)
    torch.testing.assert_close(lazy.dequantize().double(), naive_gptq(w, x.T @ x, 3, group_size), atol=1e-5, rtol=1e-5)
