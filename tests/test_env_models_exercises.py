import pytest
import torch

from helpers import check, device, set_seed, small_vgg, summary


def test_set_seed_repeats_random_numbers():
    set_seed(3)
    a = torch.rand(3)
    set_seed(3)
    assert torch.equal(a, torch.rand(3))
    with pytest.raises(ValueError, match="seed"):
        set_seed(-1)


def test_device_and_summary():
    assert device().type in ("cpu", "cuda")
    assert "mode:" in summary() and torch.__version__ in summary()


def test_small_vgg_shapes():
    assert small_vgg()(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert small_vgg(width=8, num_classes=5)(torch.randn(1, 1, 28, 28)).shape == (1, 5)
    with pytest.raises(ValueError, match="width"):
        small_vgg(width=0)


def test_check_reports_each_state(capsys):
    check(..., 4)
    check(4, 4)
    check(5, 4, hint="Count again.")
    check(3.14, 3.1416, rel_tol=0.01)
    check("four", 4, rel_tol=0.1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("⏳ not yet done")
    assert out[1].startswith("✅ correct")
    assert out[2] == "❌ not quite: got 5. Count again."
    assert out[3].startswith("✅") and out[4].startswith("❌")


def test_check_required_raises_on_a_wrong_or_missing_answer():
    check(4, 4, required=True)
    with pytest.raises(AssertionError, match="expected 4"):
        check(5, 4, required=True)
    with pytest.raises(AssertionError, match="not yet done"):
        check(None, 4, required=True)
