"""Notebook 05's exercise checks fail on a wrong answer (one plausible mistake each)."""
import numpy as np
import pytest
import torch
from exercise_checks import assert_check_catches
from torch import nn

from helpers.compress import pruning
from helpers.exercises import check


def per_layer_masks(weights, amount):
    """One threshold per layer: every layer loses the same fraction, however small its weights are."""
    if not 0 <= amount <= 1:
        raise ValueError("amount")
    masks = []
    for w in weights:
        k = round(amount * w.numel())
        threshold = w.abs().flatten().kthvalue(k).values if k else -1.0
        masks.append((w.abs() > threshold).to(w.dtype))
    return masks


def big_endian_bits(weight):
    """The bits of each byte in the wrong order (numpy.packbits' default): entry 8j is the byte's highest bit."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError("a tensor")
    keep = (weight != 0).flatten().numpy()
    return {"shape": tuple(weight.shape), "bits": torch.from_numpy(np.packbits(keep)),
            "values": weight.detach()[weight != 0]}


def running_statistics_forgotten(conv, bn, k):
    """γ and β copied, but a fresh BatchNorm's running mean 0 and variance 1 left in place."""
    if not 0 <= k < conv.out_channels or bn.num_features != conv.out_channels:
        raise ValueError("k")
    keep = conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:conv.out_channels - k].sort().values
    new_conv = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new_conv.weight.data = conv.weight.detach()[keep].clone()
    if conv.bias is not None:
        new_conv.bias.data = conv.bias.detach()[keep].clone()
    new_bn = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum)
    new_bn.weight.data, new_bn.bias.data = bn.weight.detach()[keep].clone(), bn.bias.detach()[keep].clone()
    return new_conv, new_bn


WRONG = {"05.1": per_layer_masks, "05.2": big_endian_bits, "05.3": running_statistics_forgotten}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


def test_channels_kept_in_the_order_of_their_norms_fail_on_the_first_case(capsys):
    def importance_order(conv, bn, k):  # the kept channels not sorted back into their original order
        keep = conv.weight.detach().abs().sum(dim=(1, 2, 3)).argsort(descending=True)[:conv.out_channels - k]
        return pruning._smaller_conv(conv, keep, None), pruning._smaller_bn(bn, keep)

    check("05.3", importance_order)
    out = capsys.readouterr().out
    assert out.startswith("❌ case 1 of") and "conv's weight" in out


def test_a_mask_of_booleans_is_named_by_its_dtype(capsys):
    check("05.1", lambda weights, amount: [m.bool() for m in pruning.global_magnitude_masks(weights, amount)])
    out = capsys.readouterr().out
    assert out.startswith("❌ case 1 of") and "dtype bool, expected float32" in out


@pytest.mark.parametrize("key, wrong", [("05.4", 16 * 32 * 9 * 14 * 14),      # conv4's saving forgotten
                                        ("05.5", 1 - 4 / (8 + 4)),            # one index per non-zero, not two
                                        ("05.6", 48 * 7 * 7 * 256)])          # fc1's biases forgotten
def test_a_wrong_number_fails(key, wrong, capsys):
    check(key, wrong)
    assert capsys.readouterr().out.startswith("❌")


def test_the_challenge_counts_zeros_and_compares_with_the_original_in_one_call(monkeypatch, tmp_path):
    import helpers.data
    import helpers.train
    from helpers import small_vgg
    from helpers.compress import prune_channels, prune_unstructured
    from helpers.exercises.challenges import challenge

    torch.manual_seed(0)
    original = small_vgg().eval()
    images = torch.utils.data.TensorDataset(torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,)))
    monkeypatch.setattr(helpers.train, "trained_small_vgg", lambda: original)
    monkeypatch.setattr(helpers.data, "load_dataset", lambda *args, **kwargs: images)
    figures = challenge("05", prune_unstructured(original, 0.9), note="test", path=tmp_path / "record.json")
    assert figures["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert figures["points lost vs the original"] == pytest.approx(100 * (figures["original accuracy"]
                                                                         - figures["accuracy"]))
    assert (tmp_path / "record.json").exists()
    with pytest.raises(ValueError, match="the VGG's own conv and linear weights"):
        challenge("05", prune_channels(original, 0.5), path=tmp_path / "record.json")
