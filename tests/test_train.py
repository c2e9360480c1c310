import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from helpers import cached_model, evaluate, fit
from helpers import train as train_module


def separable_data(n=256, seed=0):
    """Two classes split by the sign of the first feature: any linear model can learn it."""
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_fit_learns_and_reports_history():
    torch.manual_seed(0)  # a fixed start, so the result does not depend on which tests ran before
    model = nn.Linear(2, 2)
    history = fit(model, separable_data(), epochs=3, lr=0.05, batch_size=16, val_data=separable_data(seed=1),
                  progress=False)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["val_acc"] > 0.9


def test_fit_is_repeatable_with_the_same_seed():
    losses = []
    for _ in range(2):
        torch.manual_seed(123)
        model = nn.Linear(2, 2)
        losses.append(fit(model, separable_data(), epochs=1, seed=7, progress=False)[0]["loss"])
    assert losses[0] == losses[1]


def test_evaluate_restores_the_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    accuracy = evaluate(model, separable_data())
    assert 0 <= accuracy <= 1
    assert model.training


class SentAway(nn.Linear):
    """A model that records every device it is sent to and stays on the CPU: a GPU, mocked."""

    def __init__(self):
        super().__init__(2, 2)
        self.sent_to = []

    def to(self, *args, **kwargs):
        self.sent_to.append(torch.device(args[0] if args else kwargs["device"]))
        return self


@pytest.fixture
def a_gpu(monkeypatch):
    """helpers.device() says "the GPU is meta": training borrows it, models must come back to the CPU."""
    from helpers import env

    for module in (env, train_module):
        monkeypatch.setattr(module, "device", lambda: torch.device("meta"), raising=False)


def test_training_gives_the_model_back_where_it_was(a_gpu):
    from helpers.compress import distill, teacher_logits

    model = SentAway()
    fit(model, separable_data(), epochs=1, progress=False)
    assert model.sent_to == [torch.device("meta"), torch.device("cpu")]  # lent to the "GPU", then given back
    model.sent_to.clear()
    evaluate(model, separable_data())
    assert model.sent_to[-1] == torch.device("cpu")
    student, teacher = SentAway(), SentAway()
    teacher_logits(teacher, separable_data())
    distill(student, teacher, separable_data(), progress=False)
    assert student.sent_to[-1] == teacher.sent_to[-1] == torch.device("cpu")


def test_an_int8_model_stays_on_the_cpu(a_gpu):
    from helpers import small_vgg
    from helpers.compress import quantize
    from helpers.env import cpu_only, model_device

    images = TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    int8 = quantize(small_vgg(width=4), images, batches=1)
    assert cpu_only(int8) and not cpu_only(small_vgg(width=4))
    assert 0 <= evaluate(int8, images) <= 1  # the "GPU" (meta) is not used for it
    assert model_device(int8) == torch.device("cpu")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"epochs": 0}, ValueError, "epochs"), ({"lr": -1.0}, ValueError, "lr"),
    ({"train_data": [1, 2]}, TypeError, "Dataset"), ({"model": "net"}, TypeError, "Module"),
])
def test_fit_rejects_bad_input(kwargs, error, match):
    args = {"model": nn.Linear(2, 2), "train_data": separable_data()} | kwargs
    model, data = args.pop("model"), args.pop("train_data")
    with pytest.raises(error, match=match):
        fit(model, data, progress=False, **args)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "DATA_DIR", tmp_path)
    return tmp_path / "models"


def test_cached_model_trains_once_then_loads(cache_dir):
    calls = []

    def train(model):
        calls.append(1)
        fit(model, separable_data(), epochs=1, progress=False)

    first = cached_model("tiny", lambda: nn.Linear(2, 2), train, fast=True)
    second = cached_model("tiny", lambda: nn.Linear(2, 2), train, fast=True)
    assert len(calls) == 1
    assert torch.equal(first.weight, second.weight)
    assert (cache_dir / "tiny-fast.pt").exists()
    assert not list(cache_dir.glob("*.tmp"))  # written atomically, nothing left behind
    cached_model("tiny", lambda: nn.Linear(2, 2), train, fast=False)  # full mode has its own file
    assert len(calls) == 2 and (cache_dir / "tiny.pt").exists()


def test_corrupted_cache_is_moved_aside_and_rebuilt(cache_dir):
    cache_dir.mkdir(parents=True)
    (cache_dir / "tiny-fast.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="could not load"):
        model = cached_model("tiny", lambda: nn.Linear(2, 2), lambda m: None, fast=True)
    assert isinstance(model, nn.Linear)
    assert (cache_dir / "tiny-fast.pt.bad").read_bytes() == b"not a checkpoint"  # kept, not deleted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached_model("tiny", lambda: nn.Linear(2, 2), lambda m: None, fast=True)  # now loads cleanly


def test_cache_from_another_architecture_is_not_loaded_silently(cache_dir):
    cached_model("net", lambda: nn.Linear(2, 2), lambda m: None, fast=True)
    with pytest.warns(UserWarning, match="could not load"):
        model = cached_model("net", lambda: nn.Linear(2, 3), lambda m: None, fast=True)
    assert model.out_features == 3


def test_cached_model_rejects_bad_names_and_builders(cache_dir):
    with pytest.raises(ValueError, match="cache name"):
        cached_model("../escape", lambda: nn.Linear(2, 2), lambda m: None)
    with pytest.raises(TypeError, match="build"):
        cached_model("x", lambda: "not a model", lambda m: None)


@pytest.mark.parametrize("name", ["small_vgg", "tree_net"])
def test_trained_models_are_trained_once(cache_dir, monkeypatch, name):
    calls = []
    monkeypatch.setattr(train_module, "fit", lambda model, data, **args: calls.append((len(data), args)))
    first = getattr(train_module, f"trained_{name}")()
    second = getattr(train_module, f"trained_{name}")()
    assert len(calls) == 1, "the second call must load the cached weights"
    assert calls[0][1]["epochs"] >= 1 and calls[0][0] > 0
    assert not first.training and [type(m) for m in first] == [type(m) for m in second]
    assert torch.equal(first[0].weight, second[0].weight)
    assert list(cache_dir.glob(f"{name}*.pt"))
