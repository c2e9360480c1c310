"""helpers.lm: the corpus (pinned, checked), the byte-level GPT, its key-value cache, bits per byte, generation,
training and the cache of the trained model."""
import math

import pytest
import torch

from helpers import lm
from helpers import train as train_module

TINY = lm.GPTConfig(context=32, width=32, layers=2, heads=4)


@pytest.fixture(scope="module")
def text():
    return lm.corpus()


def test_the_corpus_is_torch_nn_of_the_pinned_torch_split_by_file(text):
    files = lm.corpus_files()
    assert files and all(f.startswith("torch/nn/") and f.endswith(".py") for f in files)
    assert text.sha256 == lm.CORPUS_SHA256
    assert set(text.train_files) | set(text.held_out_files) == set(files)
    assert not set(text.train_files) & set(text.held_out_files)
    assert list(text.held_out_files) == files[lm.HELD_OUT_EVERY - 1::lm.HELD_OUT_EVERY]
    assert text.train.dtype == text.held_out.dtype == torch.uint8
    assert 0.05 < len(text.held_out) / (len(text.train) + len(text.held_out)) < 0.15


def test_other_sources_are_refused_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(lm, "CORPUS_SHA256", "0" * 64)
    with pytest.raises(lm.CorpusMismatchError, match="torch/nn"):
        lm.corpus()
    assert lm.corpus(check=False).sha256 != "0" * 64  # check=False reads them anyway


def test_windows(text):
    g = torch.Generator().manual_seed(0)
    batch = lm.random_windows(text.train, 5, 16, g)
    assert batch.shape == (5, 17) and batch.dtype == torch.long
    even = lm.even_windows(text.held_out, 4, 16)
    assert torch.equal(even, lm.even_windows(text.held_out, 4, 16))
    assert torch.equal(even[0], text.held_out[:17].long())
    assert lm.even_windows(torch.arange(40, dtype=torch.uint8), 100, 9).shape == (4, 10)  # no more than fit
    with pytest.raises(ValueError, match="fewer than one window"):
        lm.random_windows(text.train[:5], 1, 16, g)
    with pytest.raises(ValueError, match="fewer than one window"):
        lm.even_windows(text.train[:5], 1, 16)


@pytest.mark.parametrize("bad", [dict(width=30, heads=4), dict(layers=0), dict(context=2.5), dict(heads=True)])
def test_a_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        lm.GPTConfig(**bad)


def test_the_gpt_has_gpt2s_shape():
    model = lm.GPT()
    c = model.config
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 4 * c.layers and all(n.endswith(("qkv", "proj", "fc1", "fc2")) for n in linears)
    per_block = 3 * c.width ** 2 + c.width ** 2 + 2 * 4 * c.width ** 2 + 4 * c.width  # linears + two LayerNorms
    expected = c.layers * per_block + (c.vocab + c.context) * c.width + 2 * c.width  # + embeddings + ln_f
    assert sum(p.numel() for p in model.parameters()) == expected
    with pytest.raises(TypeError):
        lm.GPT("small")


def test_forward_and_the_key_value_cache_agree():
    torch.manual_seed(0)
    model = lm.GPT(TINY).eval()
    x = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        full = model(x)
        caches = [[] for _ in model.blocks]
        steps = [model(x[:, :7], caches)] + [model(x[:, i:i + 1], caches) for i in range(7, 20)]
    assert full.shape == (2, 20, 256)
    torch.testing.assert_close(torch.cat(steps, 1), full)
    with pytest.raises(ValueError, match="one new byte"):
        model(x[:, :2], caches)
    with pytest.raises(ValueError, match="at most 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(TypeError, match="long tensor"):
        model(torch.zeros(1, 3))


def test_bits_per_byte_of_a_model_that_knows_nothing_is_8():
    model = lm.GPT(TINY)
    torch.nn.init.zeros_(model.wte.weight)  # zero logits: every byte equally likely
    windows = torch.randint(0, 256, (3, 17))
    assert lm.bits_per_byte(model, windows) == pytest.approx(8.0)
    assert model.training  # its mode is given back
    with pytest.raises(ValueError, match="windows"):
        lm.bits_per_byte(model, windows[:0])
    with pytest.raises(TypeError):
        lm.bits_per_byte("model", windows)


def test_generate_is_repeatable_and_greedy_with_top_k_1():
    torch.manual_seed(1)
    model = lm.GPT(TINY).eval()
    a, b = lm.generate(model, "def ", 10, seed=3), lm.generate(model, b"def ", 10, seed=3)
    assert a == b and len(a) == 10 and isinstance(a, bytes)
    greedy = lm.generate(model, "de", 3, top_k=1)
    idx = list(b"de")
    for byte in greedy:  # each byte is the most likely one after the bytes before it
        assert byte == model(torch.tensor([idx]))[0, -1].argmax().item()
        idx.append(byte)
    for bad in [dict(prompt="", length=3), dict(prompt="x", length=32), dict(prompt="x", length=-1),
                dict(prompt="x", length=2, temperature=0), dict(prompt="x", length=2, top_k=0)]:
        with pytest.raises(ValueError):
            lm.generate(model, **bad)


def test_training_lowers_the_loss_and_refuses_bad_recipes(text):
    torch.manual_seed(0)
    model = lm.GPT(TINY)
    losses = lm.train_gpt(model, text.train, lm.Recipe(steps=30, batch_size=4, lr=3e-3, warmup=5), progress=False)
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    assert not model.training
    with pytest.raises(ValueError, match="Recipe"):
        lm.train_gpt(model, text.train, lm.Recipe(steps=0, batch_size=4))
    with pytest.raises(TypeError):
        lm.train_gpt(torch.nn.Linear(2, 2), text.train, lm.Recipe(steps=1, batch_size=1))


def test_trained_gpt_is_trained_once_then_loaded(monkeypatch, tmp_path):
    monkeypatch.setattr(train_module, "DATA_DIR", tmp_path)
    calls = []
    real = lm.train_gpt
    monkeypatch.setattr(lm, "train_gpt", lambda *a, **k: calls.append(1) or real(*a, **k, progress=False))
    recipe = lm.Recipe(steps=2, batch_size=2, warmup=1)
    first = lm.trained_gpt(TINY, recipe)
    second = lm.trained_gpt(TINY, recipe)
    assert len(calls) == 1 and len(list(tmp_path.glob("models/gpt_torch_nn_*.pt"))) == 1
    for p, q in zip(first.parameters(), second.parameters()):
        assert torch.equal(p, q)
    assert math.isfinite(lm.bits_per_byte(second, torch.randint(0, 256, (1, 9))))


def test_the_course_windows_are_fixed_and_apart(text):
    held, cal = lm.held_out_windows(4), lm.calibration_windows(3)
    assert held.shape == (4, 257) and cal.shape == (3, 257)
    assert torch.equal(held, lm.held_out_windows(4)) and torch.equal(cal, lm.calibration_windows(3))
    assert not torch.equal(cal, lm.calibration_windows(3, seed=1))
    assert lm.held_out_windows().shape[0] == (24 if lm.FAST else 128)


def test_a_model_with_torchao_weights_is_evaluated_where_it_is():
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    model = lm.GPT(TINY).eval()
    windows = torch.randint(0, 256, (2, 17))
    before = lm.bits_per_byte(model, windows)
    quantize_(model, Int8WeightOnlyConfig())
    assert type(model.blocks[0].mlp.fc1.weight).__name__ == "Int8Tensor"
    assert lm.bits_per_byte(model, windows) == pytest.approx(before, rel=1e-2)
    assert len(lm.generate(model, "x", 4)) == 4
