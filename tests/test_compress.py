import copy

import pytest
import torch
from torch import nn

from helpers import count_params, model_size, small_net, small_vgg
from helpers.models import RepVGGBlock, TreeBlock, tree_net
from helpers import compress
from helpers.compress import quantization
from helpers.compress import (distill, distillation_loss, low_rank, make_permanent, prune_channels, prune_unstructured,
                              quantize, quantized_engine, sparsity, teacher_logits)

X = torch.randn(4, 1, 28, 28)


def trained_looking(model, seed=0):
    """Random BN statistics, so that BN bookkeeping mistakes change the output."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5); m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2); m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_pruning_removes_the_fraction_asked(scope):
    net = small_vgg()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    pruned = prune_unstructured(net, 0.8, scope=scope)
    assert sparsity(pruned) == pytest.approx(0.8, abs=1e-3)
    assert pruned(X).shape == (4, 10) and count_params(pruned) == count_params(net)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items()), "the original must not change"
    assert not any(k.endswith("_mask") or k.endswith("_orig") for k in pruned.state_dict()), "pruning made permanent"


def test_global_pruning_keeps_the_largest_weights():
    net = nn.Sequential(nn.Linear(4, 4, bias=False))
    net[0].weight.data = torch.arange(1.0, 17).view(4, 4)
    pruned = prune_unstructured(net, 0.25)
    assert torch.equal(pruned[0].weight == 0, net[0].weight <= 4)


def test_kept_masks_hold_the_zeros_through_training():
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    pruned = prune_unstructured(net, 0.5, keep_masks=True)
    assert {"0.weight_orig", "0.weight_mask"} <= set(pruned.state_dict())
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        pruned(torch.randn(16, 8)).pow(2).sum().backward()
        optimizer.step()
    assert sparsity(pruned) == 0.5, "training must not regrow pruned weights"
    x = torch.randn(3, 8)
    expected = pruned(x)
    assert make_permanent(pruned) is pruned
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())
    torch.testing.assert_close(pruned(x), expected)
    assert sparsity(pruned) == 0.5


def test_pruning_nothing_changes_nothing():
    net = trained_looking(small_vgg())
    torch.testing.assert_close(prune_unstructured(net, 0)(X), net(X))
    torch.testing.assert_close(prune_channels(net, 0)(X), net(X))


@pytest.mark.parametrize("amount", [1.0, 1.5, -0.1, "half", True])
def test_bad_amounts_are_clear_errors(amount):
    for fn in (prune_unstructured, prune_channels):
        with pytest.raises(ValueError, match=r"a number in \[0, 1\)"):
            fn(small_vgg(), amount)


def test_channel_pruning_by_half_gives_the_half_width_architecture():
    pruned = prune_channels(trained_looking(small_vgg(width=32)), 0.5)
    assert pruned(X).shape == (4, 10)
    assert count_params(pruned) == count_params(small_vgg(width=16))
    assert [tuple(p.shape) for p in pruned.parameters()] == [tuple(p.shape) for p in small_vgg(width=16).parameters()]


def test_removing_dead_channels_does_not_change_the_output():
    net = trained_looking(small_vgg(width=8))
    for i, layer in enumerate(net):
        if isinstance(layer, nn.Conv2d):  # silence every other channel: zero filter, zero BN scale and shift
            dead = torch.arange(0, layer.out_channels, 2)
            layer.weight.data[dead] = 0
            net[i + 1].weight.data[dead] = 0
            net[i + 1].bias.data[dead] = 0
    pruned = prune_channels(net, 0.5)                # L1 importance picks exactly the silenced ones
    assert count_params(pruned) == count_params(small_vgg(width=4))
    torch.testing.assert_close(pruned(X), net(X))   # through Conv -> BN -> Conv and Flatten -> Linear


def test_channel_pruning_accepts_another_importance():
    net = trained_looking(small_vgg(width=8))
    last_channels_first = lambda conv: torch.arange(conv.out_channels, dtype=torch.float)
    pruned = prune_channels(net, 0.5, importance=last_channels_first)
    torch.testing.assert_close(pruned[0].weight, net[0].weight[4:])
    with pytest.raises(ValueError, match="scores"):
        prune_channels(net, 0.5, importance=lambda conv: torch.ones(3))


def test_channel_pruning_rejects_what_it_cannot_rebuild():
    with pytest.raises(TypeError, match="nn.Sequential"):
        prune_channels(nn.Linear(2, 2), 0.5)
    with pytest.raises(TypeError, match="not supported"):
        prune_channels(small_net("resnet"), 0.5)
    with pytest.raises(TypeError, match="groups=1"):
        prune_channels(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), 0.5)
    with pytest.raises(TypeError, match="Module"):
        prune_unstructured("model", 0.5)


# ---------------------------------------------------------------- quantization

def calibration(n=64, seed=0):
    images = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.TensorDataset(images, torch.zeros(n, dtype=torch.long))


def test_quantize_gives_a_4x_smaller_int8_model_with_close_outputs():
    net = trained_looking(small_vgg(width=8))
    quantized = quantize(net, calibration(), batches=2, batch_size=32)
    assert model_size(net) / model_size(quantized) > 3.5
    assert any("quantized" in type(m).__module__ for m in quantized.modules()), "int8 modules expected"
    x = calibration(8, seed=1).tensors[0]
    reference, output = net(x), quantized(x)
    assert output.shape == reference.shape and output.dtype == torch.float32
    assert (output - reference).norm() / reference.norm() < 0.1
    torch.testing.assert_close(net(x), reference)  # the original is untouched


def test_quantize_works_on_a_channel_pruned_model():
    pruned = prune_channels(trained_looking(small_vgg(width=8)), 0.5)
    assert quantize(pruned, calibration(), batches=1)(X).shape == (4, 10)


def test_quantize_splices_the_thin_layers_of_low_rank_into_the_chain():
    torch.manual_seed(0)
    net = low_rank(small_vgg(width=4).eval(), rank=8, layers=["15"])
    assert isinstance(net[15], nn.Sequential), "low_rank leaves the two thin layers nested"
    quantized = quantize(net, calibration())
    torch.testing.assert_close(quantized(X), net(X), atol=0.5, rtol=0.1)


def test_atomic_file_replaces_only_a_complete_file(tmp_path):
    from helpers.env import atomic_file

    path = tmp_path / "sub" / "f.txt"
    with atomic_file(path, "w") as file:
        file.write("whole")
    with pytest.raises(RuntimeError):
        with atomic_file(path, "w") as file:
            file.write("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "whole" and list(path.parent.iterdir()) == [path]


def test_quantize_says_what_it_cannot_quantize():
    with pytest.raises(TypeError, match="nn.Sequential"):
        quantize(nn.Linear(784, 10), calibration())
    with pytest.raises(TypeError, match=r"layer 1 \(Sigmoid\)"):
        quantize(nn.Sequential(nn.Linear(784, 10), nn.Sigmoid()), calibration())
    with pytest.raises(TypeError, match="calibration_data"):
        quantize(small_vgg(width=8), torch.randn(4, 1, 28, 28))


def test_quantize_explains_a_missing_engine(monkeypatch):
    monkeypatch.setattr(quantization, "_supported_engines", lambda: ["none"])
    with pytest.raises(RuntimeError, match="no quantized CPU engine"):
        quantized_engine()


# ---------------------------------------------------------------- distillation and low rank

def test_distillation_loss_is_hintons_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    T, alpha = 3.0, 0.7
    p_t, log_p_s = torch.softmax(t / T, 1), torch.log_softmax(s / T, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * torch.nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(distillation_loss(s, t, y, T, alpha), expected)
    torch.testing.assert_close(distillation_loss(s, t, y, T, 0.0), torch.nn.functional.cross_entropy(s, y))
    assert distillation_loss(t, t, y, T, 1.0).abs() < 1e-6, "a student equal to its teacher has no soft loss"


def test_distill_trains_the_student_towards_the_teacher():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x = torch.randn(256, 4)
    data = torch.utils.data.TensorDataset(x, teacher(x).argmax(1).detach())
    student = nn.Linear(4, 3)
    before = distillation_loss(student(x), teacher(x), data.tensors[1]).item()
    teacher_weight = teacher.weight.detach().clone()
    distill(student, teacher, data, epochs=5, lr=0.05, batch_size=32, progress=False)
    assert distillation_loss(student(x), teacher(x), data.tensors[1]).item() < before / 2
    assert torch.equal(teacher.weight, teacher_weight), "the teacher must not change"


def test_distill_with_precomputed_logits_trains_the_same_student():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(200, 4)
    data = torch.utils.data.TensorDataset(x, torch.randint(0, 3, (200,)))
    logits = teacher_logits(teacher, data, batch_size=64)
    with torch.no_grad():
        torch.testing.assert_close(logits, teacher(x))
    torch.manual_seed(1)
    live = nn.Linear(4, 3)
    cached = copy.deepcopy(live)
    distill(live, teacher, data, epochs=2, batch_size=32, progress=False)
    distill(cached, logits, data, epochs=2, batch_size=32, progress=False)
    torch.testing.assert_close(cached.weight, live.weight)
    with pytest.raises(ValueError, match="one row per item"):
        distill(cached, logits[:100], data)
    with pytest.raises(TypeError, match="teacher must be"):
        distill(cached, "teacher", data)


@pytest.mark.parametrize("kwargs, match", [({"T": 0}, "T must be"), ({"T": -1.0}, "T must be"),
                                           ({"alpha": 1.5}, r"\[0, 1\]"), ({"alpha": -0.1}, r"\[0, 1\]")])
def test_distillation_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), **kwargs)
    with pytest.raises(ValueError, match=match):
        distill(nn.Linear(2, 3), nn.Linear(2, 3), calibration(), **kwargs)


def test_low_rank_error_is_the_dropped_singular_values():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    small = low_rank(net, rank=8, layers=["1"])
    first, second = small[1]
    assert first.weight.shape == (8, 784) and second.weight.shape == (64, 8)
    assert count_params(small[1]) == 8 * (784 + 64) + 64
    singular = torch.linalg.svdvals(net[1].weight.detach())
    error = (second.weight @ first.weight - net[1].weight).norm() ** 2
    torch.testing.assert_close(error, (singular[8:] ** 2).sum(), rtol=1e-4, atol=1e-4)
    assert small[3] is not net[3] and isinstance(small[3], nn.Linear), "only the named layer is replaced"


def test_full_rank_changes_nothing_and_energy_picks_the_rank():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    x = torch.randn(4, 20)
    full = low_rank(low_rank(net, rank=20, layers=["0"]), rank=5, layers=["2"])  # each at its full rank
    torch.testing.assert_close(full(x), net(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(low_rank(net, energy=1.0)(x), net(x), rtol=1e-4, atol=1e-5)
    s = torch.linalg.svdvals(net[0].weight.detach())
    kept = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
    r = low_rank(net, energy=0.5, layers=["0"])[0][0].out_features
    assert kept[r - 1] >= 0.5 and (r == 1 or kept[r - 2] < 0.5)


@pytest.mark.parametrize("kwargs, match", [({"rank": 0}, "whole number >= 1"), ({"rank": 6}, "at most 5"),
                                           ({}, "either rank"), ({"rank": 2, "energy": 0.9}, "either rank"),
                                           ({"energy": 1.5}, r"\(0, 1\]"), ({"rank": 2, "layers": ["9"]}, "not a Linear")])
def test_low_rank_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        low_rank(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5)), **kwargs)


# ---------------------------------------------------------------- fusion and re-parameterisation

def _random_bn(model):
    """Give every BatchNorm non-trivial statistics and affine parameters, so folding has work to do."""
    for bn in model.modules():
        if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-1, 1)
    return model.eval()


def test_fold_bn_and_fuse_bn_compute_the_same_function():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 5, 3, padding=1), _random_bn(nn.BatchNorm2d(5))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(compress.fold_bn(conv, bn)(x), bn(conv(x)))
    linear, bn1 = nn.Linear(6, 4), _random_bn(nn.BatchNorm1d(4))
    v = torch.randn(3, 6)
    torch.testing.assert_close(compress.fold_bn(linear, bn1)(v), bn1(linear(v)))

    net = _random_bn(small_vgg(width=4))
    fused = compress.fuse_bn(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules()), "the original is left as it was"
    torch.testing.assert_close(fused(X), net(X))
    assert count_params(fused) < count_params(net)


def test_fold_bn_rejects_mismatched_layers():
    with pytest.raises(ValueError, match="has 4 channels"):
        compress.fold_bn(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="Conv2d or Linear"):
        compress.fold_bn(nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="BatchNorm"):
        compress.fold_bn(nn.Conv2d(3, 5, 3), nn.LayerNorm(5))


@pytest.mark.parametrize("how", ["sum", "concat"])
def test_merge_parallel_equals_the_branches(how):
    torch.manual_seed(0)
    convs = [nn.Conv2d(4, 6, k, stride=2, padding=k // 2) for k in (1, 3, 5)]
    x = torch.randn(2, 4, 11, 11)
    merged = compress.merge_parallel(convs, how)
    outputs = [c(x) for c in convs]
    expected = sum(outputs) if how == "sum" else torch.cat(outputs, 1)
    torch.testing.assert_close(merged(x), expected)
    assert merged.kernel_size == (5, 5)


def test_merge_parallel_rejects_what_cannot_merge():
    with pytest.raises(ValueError, match="same input"):
        compress.merge_parallel([nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(5, 6, 3, padding=1)])
    with pytest.raises(ValueError, match="same out_channels"):
        compress.merge_parallel([nn.Conv2d(4, 6, 3, padding=1), nn.Conv2d(4, 7, 3, padding=1)])
    with pytest.raises(ValueError, match="'same' zero padding"):
        compress.merge_parallel([nn.Conv2d(4, 6, 3, padding=0)])
    with pytest.raises(ValueError, match="'sum' or 'concat'"):
        compress.merge_parallel([nn.Conv2d(4, 6, 3, padding=1)], how="add")


def test_reparameterize_repvgg_is_exact():
    torch.manual_seed(0)
    net = _random_bn(nn.Sequential(RepVGGBlock(4, 4), RepVGGBlock(4, 8, stride=2), nn.Flatten(), nn.Linear(8 * 16, 3)))
    x = torch.randn(2, 4, 8, 8)
    merged = compress.reparameterize(net)
    assert [type(m) for m in merged] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear]
    torch.testing.assert_close(merged(x), net(x))
    with pytest.raises(ValueError, match="no RepVGGBlock"):
        compress.reparameterize(small_vgg(width=4))


def test_fold_avg_pool_is_exact_when_the_pool_counts_the_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 9, 9)
    for k in (3, 5):
        pool, conv = nn.AvgPool2d(k, stride=1, padding=k // 2), nn.Conv2d(5, 7, 1)
        folded = compress.fusion.fold_avg_pool(pool, conv)
        assert folded.kernel_size == (k, k) and folded.padding == (k // 2, k // 2)
        torch.testing.assert_close(folded(x), conv(pool(x)))
        torch.testing.assert_close(folded.weight, conv.weight.expand(-1, -1, k, k) / k ** 2)
    # a pool that does not count the padding divides the border windows by fewer than 9: the W / 9
    # kernel is right inside the image and wrong on its border
    conv = nn.Conv2d(5, 7, 1)
    folded = compress.fusion.fold_avg_pool(nn.AvgPool2d(3, stride=1, padding=1), conv)
    error = folded(x) - conv(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)(x))
    assert error[..., 1:-1, 1:-1].abs().max() < 1e-5 and error[..., 0, :].abs().max() > 1e-2


@pytest.mark.parametrize("pool, conv, match", [
    (nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.Conv2d(4, 6, 1), "count_include_pad"),
    (nn.AvgPool2d(3, 1, 1, divisor_override=4), nn.Conv2d(4, 6, 1), "count_include_pad"),
    (nn.AvgPool2d(3, 2, 1), nn.Conv2d(4, 6, 1), "stride 1"),
    (nn.AvgPool2d(3, 1, 0), nn.Conv2d(4, 6, 1), "padding"),
    (nn.AvgPool2d(2, 1, 1), nn.Conv2d(4, 6, 1), "odd"),
    (nn.AvgPool2d(3, 1, 1), nn.Conv2d(4, 6, 3, padding=1), "1x1"),
    (nn.AvgPool2d(3, 1, 1), nn.Conv2d(4, 8, 1, groups=2), "1x1"),
])
def test_fold_avg_pool_refuses_what_is_not_one_convolution(pool, conv, match):
    with pytest.raises(ValueError, match=match):
        compress.fusion.fold_avg_pool(pool, conv)
    with pytest.raises(TypeError, match="AvgPool2d"):
        compress.fusion.fold_avg_pool(nn.MaxPool2d(3, 1, 1), conv)
    with pytest.raises(TypeError, match="Conv2d"):
        compress.fusion.fold_avg_pool(pool, nn.Linear(4, 6))


def test_fit_conv_recovers_a_conv_and_merge_tree_blocks_approximates_the_tree():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(2, 3, 9, 9)
    fitted = compress.fit_conv(conv, x)
    torch.testing.assert_close(fitted.weight, conv.weight, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="odd"):
        compress.fit_conv(conv, x, kernel_size=2)

    net = _random_bn(tree_net())
    images = torch.randn(32, 1, 28, 28)
    data = torch.utils.data.TensorDataset(images, torch.zeros(32))
    merged = compress.merge_tree_blocks(net, data, images=32)
    assert not any(isinstance(m, TreeBlock) for m in merged)
    assert sum(isinstance(m, nn.Conv2d) for m in merged) == 3
    # the linear branches are exact; the deep branch is a least-squares fit, close but not equal
    error = (merged(images) - net(images)).abs().max() / net(images).abs().max()
    assert 0 < error < 0.05

    first = compress.merge_tree_blocks(net, data, images=32, count=1)  # block by block
    assert [isinstance(m, TreeBlock) for m in first].count(True) == 1 and isinstance(first[6], TreeBlock)
    torch.testing.assert_close(first[:5](images), merged[:5](images))
    for count in (0, 1.5, True):
        with pytest.raises(ValueError, match="count"):
            compress.merge_tree_blocks(net, data, count=count)


def test_tree_block_linear_branches_merge_exactly_with_or_without_a_pool_branch():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 10, 10)
    for c_pool in (0, 3):
        block = _random_bn(TreeBlock(6, 2, 4, 3, 5, c_pool=c_pool))
        exact = compress.fusion.tree_branches_exact(block)
        branches = [block.branch1, block.branch3] + ([block.pool] if c_pool else [])
        assert len(exact) == len(branches)
        for conv, branch in zip(exact, branches):
            torch.testing.assert_close(conv(x), branch(x), rtol=1e-4, atol=1e-5)
        merged = compress.merge_tree_blocks(nn.Sequential(block), torch.utils.data.TensorDataset(x, torch.zeros(2)))
        assert merged[0].out_channels == block(x).shape[1] == 2 + 4 + 5 + c_pool
        linear = [*range(6), *range(11, 11 + c_pool)]  # the channels of branch1, branch3 and pool: exact
        torch.testing.assert_close(merged(x)[:, linear], block(x)[:, linear], rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="TreeBlock"):
        compress.fusion.tree_branches_exact(RepVGGBlock(4, 4))


def test_freeze_keeps_the_function_and_reports_its_file_size():
    torch.manual_seed(0)
    net = _random_bn(small_vgg(width=4))
    for channels_last in (False, True):
        frozen = compress.freeze(net, X[:1], channels_last=channels_last)
        torch.testing.assert_close(frozen(X), net(X), rtol=1e-4, atol=1e-5)  # traced at batch 1, runs at batch 4
    assert abs(model_size(frozen) - model_size(net)) < 0.2 * model_size(net), "the saved graph holds the weights"
    with pytest.raises(TypeError, match="torch.nn.Module"):
        compress.freeze(lambda x: x, X)
