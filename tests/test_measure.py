import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import (Timing, benchmark, compare, count_flops, count_macs, count_params, layer_times, time_models,
                     model_size, num_threads, small_vgg)
from helpers.measure import layer_kind


def grouped_conv(g):
    return nn.Conv2d(6, 30, 3, 1, groups=g)


def test_count_params_counts_weights_and_biases():
    assert count_params(nn.Linear(3, 2)) == 3 * 2 + 2
    assert count_params(small_vgg()) == 870_826


def test_count_params_trainable_only():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    net[0].requires_grad_(False)
    assert count_params(net, trainable_only=True) == 3
    assert count_params(net) == 11


@pytest.mark.parametrize("g, macs", [(1, 19_602_000), (2, 9_801_000), (3, 6_534_000), (6, 3_267_000)])
def test_grouped_conv_macs_match_the_formula(g, macs):
    x = torch.randn(1, 6, 112, 112)
    assert count_macs(grouped_conv(g), x) == macs
    assert count_flops(grouped_conv(g), x) == 2 * macs


def test_counting_leaves_the_model_unchanged():
    net = small_vgg()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    count_macs(net, torch.randn(1, 1, 28, 28))
    count_flops(net, torch.randn(1, 1, 28, 28))
    assert list(net.state_dict()) == list(before)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())  # BN statistics not updated
    assert [m.training for m in net.modules()] == modes
    assert not any(hasattr(m, "total_ops") or hasattr(m, "total_params") for m in net.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    small_vgg().load_state_dict(net.state_dict())  # still loadable into a fresh model


def test_thop_counts_bn_that_pytorch_does_not():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    x = torch.randn(1, 3, 10, 10)
    conv_macs = 8 * 8 * 8 * 3 * 3 * 3
    assert count_flops(net, x) == 2 * conv_macs
    assert count_macs(net, x) == conv_macs + 4 * 8 * 8 * 8  # thop: 4 per BN element (normalise, scale, shift)


def test_counters_warn_when_thop_misses_functional_work():
    class FunctionalConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.weight)

    with pytest.warns(UserWarning, match="thop misses"):
        count_macs(FunctionalConv(), torch.randn(1, 3, 10, 10))


@pytest.mark.parametrize("fn", [count_params, model_size])
def test_non_module_is_a_clear_error(fn):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fn(torch.randn(3))


@pytest.mark.parametrize("fn", [count_macs, count_flops, benchmark, layer_times])
def test_bad_inputs_are_clear_errors(fn):
    net = small_vgg()
    with pytest.raises(TypeError, match="torch.nn.Module"):
        fn(net.state_dict(), torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="example input"):
        fn(net)
    with pytest.raises(TypeError, match="must be tensors"):
        fn(net, [1, 2, 3])
    with pytest.raises(ValueError, match=r"cannot run on an input of shape 1x3x28x28"):
        fn(net, torch.randn(1, 3, 28, 28))


@pytest.mark.parametrize("fn", [count_macs, count_flops, benchmark, layer_times])
def test_a_device_or_dtype_mismatch_is_named_as_such_not_as_a_shape_error(fn):
    on_meta = small_vgg().to("meta")  # a model on another device than its input, without needing a GPU
    with pytest.raises(ValueError, match=r"model is on meta but the input is on cpu") as error:
        fn(on_meta, torch.randn(1, 1, 28, 28))
    assert "shape" not in str(error.value)
    with pytest.raises(ValueError, match=r"different number types") as error:
        fn(small_vgg().double(), torch.randn(1, 1, 28, 28))
    assert "shape" not in str(error.value)


def test_a_model_that_converts_its_own_input_is_not_refused():
    class Half(nn.Module):  # e.g. notebook 06's fp16 wrapper
        def __init__(self):
            super().__init__()
            self.net = small_vgg().to(torch.bfloat16)

        def forward(self, x):
            return self.net(x.to(torch.bfloat16)).float()

    assert benchmark(Half(), torch.randn(1, 1, 28, 28), repeat=1).median > 0


def test_compare_refuses_models_on_different_devices():
    with pytest.raises(ValueError, match="model is on meta"):
        compare({"cpu": small_vgg(), "elsewhere": small_vgg().to("meta")}, torch.randn(1, 1, 28, 28))


class _MovesInside(nn.Module):
    """Fails inside forward for a device (or dtype) reason that no check before the call can see."""

    def __init__(self, why):
        super().__init__()
        self.linear, self.why = nn.Linear(2, 2), why

    def forward(self, x):
        return x + torch.zeros(1, device="meta") if self.why == "device" else self.linear(x.double())


@pytest.mark.parametrize("why, match", [("device", "different devices"), ("dtype", "different number types")])
def test_errors_raised_inside_forward_keep_their_real_reason(why, match):
    with pytest.raises(ValueError, match=match) as error:
        benchmark(_MovesInside(why), torch.randn(1, 2))
    assert "shape" not in str(error.value)


# ---------------------------------------------------------------- attention, counted by hand

E, HEADS, L, N = 64, 4, 10, 2
ATTENTION_MACS = N * (4 * L * E * E + 2 * L * L * E)  # q, k, v, out projections + QK^T and (scores)V


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(E, HEADS, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


def test_attention_is_counted_in_eval_mode_where_pytorch_fuses_it():
    x = torch.randn(N, L, E)
    net = SelfAttention().eval()  # eval + no grad: nn.MultiheadAttention's fused fast path
    assert count_flops(net, x) == 2 * ATTENTION_MACS
    assert ATTENTION_MACS <= count_macs(net, x) < 1.02 * ATTENTION_MACS  # thop adds the softmax
    assert torch.backends.mha.get_fastpath_enabled()  # switched off while counting only


def test_a_transformer_layer_and_functional_attention_are_counted():
    layer = nn.TransformerEncoderLayer(E, HEADS, dim_feedforward=4 * E, batch_first=True).eval()
    x = torch.randn(N, L, E)
    mlp_macs = N * L * 2 * E * 4 * E
    assert count_flops(layer, x) == 2 * (ATTENTION_MACS + mlp_macs)

    class Causal(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q, is_causal=True)

    q = torch.randn(1, HEADS, L, E // HEADS)
    # PyTorch's convention: the whole L x L score matrix is counted, masked or not
    assert count_flops(Causal(), q) == 2 * 2 * HEADS * L * L * (E // HEADS)


def test_vit_b_32_matches_its_published_count():
    import torchvision

    vit = torchvision.models.vit_b_32().eval()
    macs = count_flops(vit, torch.randn(1, 3, 224, 224)) / 2
    assert macs == pytest.approx(4.41e9, rel=0.005)  # torchvision's model card: 4.41 GFLOPS (multiply-adds)


def test_model_size_is_about_four_bytes_per_parameter():
    net = small_vgg()
    size = model_size(net)
    assert 4 * count_params(net) < size < 4 * count_params(net) + 100_000
    assert model_size(net.half()) < 0.51 * size


def test_timing_summary():
    t = Timing([0.001, 0.002, 0.003, 0.004, 0.005], threads=2)
    assert t.median == 0.003
    assert t.iqr == pytest.approx(0.003)
    assert "3 ms" in repr(t) and "5 calls" in repr(t) and "2 threads" in repr(t)


def test_benchmark_restores_threads_and_modes():
    net = small_vgg().train()
    threads = torch.get_num_threads()
    result = benchmark(net, torch.randn(1, 1, 28, 28), threads=1, warmup=1, repeat=4)
    assert len(result.times) == 4 and result.median > 0 and result.threads == 1
    assert torch.get_num_threads() == threads
    assert all(m.training for m in net.modules())


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads"), ({"threads": 1.5}, "threads"), ({"threads": True}, "threads"),
    ({"repeat": 0}, "repeat"), ({"warmup": -1}, "warmup"),
])
def test_benchmark_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        benchmark(nn.Linear(2, 2), torch.randn(1, 2), **kwargs)


def test_num_threads_restores_the_count_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), num_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before


class Sleep(nn.ReLU):
    """A ReLU that takes `seconds`: a layer whose cost we know."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_compare_table_and_interleaved_ratio():
    x = torch.randn(1, 4)
    table = compare({"slow": nn.Sequential(nn.Linear(4, 4), Sleep(0.004)), "fast": nn.Linear(4, 4)},
                    x, warmup=1, repeat=6)
    assert list(table.index) == ["slow", "fast"]
    assert {"params", "MACs", "size_MB", "latency_ms", "spread_ms", "speedup"} <= set(table.columns)
    assert table.loc["slow", "speedup"] == 1
    assert table.loc["fast", "speedup"] > 3  # 4 ms of sleep vs a few microseconds
    assert table.loc["fast", "MACs"] == 16


def test_compare_rejects_a_non_dict():
    with pytest.raises(TypeError, match="dict"):
        compare([nn.Linear(2, 2)], torch.randn(1, 2))


def test_time_models_races_plain_functions_too():
    x = torch.randn(1, 4)
    table = time_models({"sleepy": lambda x: time.sleep(0.004) or x, "linear": nn.Linear(4, 4)}, x, warmup=1, repeat=6)
    assert list(table.columns) == ["latency_ms", "spread_ms", "speedup"]
    assert table.loc["sleepy", "latency_ms"] >= 4 and table.loc["linear", "speedup"] > 3
    with pytest.raises(TypeError, match="model or function"):
        time_models([nn.Linear(4, 4)], x)
    with pytest.raises(TypeError, match="nn.Module"):
        time_models({"not callable": 3}, x)
    with pytest.raises(ValueError, match="example input"):
        time_models({"linear": nn.Linear(4, 4)})


def test_layer_times_attributes_time_to_the_right_kind():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), Sleep(0.003), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    table = layer_times(net, torch.randn(1, 1, 28, 28), warmup=1, repeat=5)
    assert list(table.index) == ["conv", "linear", "bn", "pool", "activation", "other"]
    assert table["share"].sum() == pytest.approx(1)
    assert table.loc["activation", "share"] > 0.5
    assert table.loc["activation", "ms"] >= 3
    assert table.loc["conv", "work"] == "tensor" and table.loc["bn", "work"] == "non-tensor"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_layer_kind():
    assert [layer_kind(m) for m in (nn.Conv2d(1, 1, 1), nn.Linear(1, 1), nn.BatchNorm2d(1), nn.MaxPool2d(2),
                                     nn.ReLU6(), nn.Flatten())] == ["conv", "linear", "bn", "pool",
                                                                    "activation", "other"]


def test_try_compile_returns_the_compiled_model_or_none_with_the_reason(monkeypatch, capsys):
    import helpers.measure as measure

    net = nn.Linear(3, 2)
    monkeypatch.setattr(torch, "compile", lambda model: model)
    assert measure.try_compile(net, torch.randn(1, 3)) is net

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda model: broken)
    assert measure.try_compile(net, torch.randn(1, 3)) is None
    assert "no C++ compiler" in capsys.readouterr().out
