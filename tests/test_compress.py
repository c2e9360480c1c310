import pytest
import torch
from torch import nn

from helpers import count_params, model_size, small_net, small_vgg
from helpers import compress
from helpers.compress import make_permanent, prune_channels, prune_unstructured, quantize, quantized_engine, sparsity

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


def test_quantize_says_what_it_cannot_quantize():
    with pytest.raises(TypeError, match="nn.Sequential"):
        quantize(nn.Linear(784, 10), calibration())
    with pytest.raises(TypeError, match=r"layer 1 \(Sigmoid\)"):
        quantize(nn.Sequential(nn.Linear(784, 10), nn.Sigmoid()), calibration())
    with pytest.raises(TypeError, match="calibration_data"):
        quantize(small_vgg(width=8), torch.randn(4, 1, 28, 28))


def test_quantize_explains_a_missing_engine(monkeypatch):
    monkeypatch.setattr(compress, "_supported_engines", lambda: ["none"])
    with pytest.raises(RuntimeError, match="no quantized CPU engine"):
        quantized_engine()
