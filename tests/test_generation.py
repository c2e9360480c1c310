"""helpers.generation on tiny random GPTs: caches change nothing, speculative decoding writes the target's own
greedy text, the masks keep what they say, and bad input is refused clearly."""
import pytest
import torch

from helpers import generation as g
from helpers import lm


@pytest.fixture(scope="module")
def target():
    torch.manual_seed(0)
    return lm.GPT(lm.GPTConfig(context=48, width=32, layers=2, heads=4)).eval()


@pytest.fixture(scope="module")
def draft():
    torch.manual_seed(1)
    return lm.GPT(lm.GPTConfig(context=48, width=16, layers=1, heads=2)).eval()


def test_attend_matches_causal_attention_at_any_offset():
    q, k, v = (torch.randn(2, 3, 6, 4, dtype=torch.float64) for _ in range(3))
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    for new in (1, 2, 6):  # the last `new` queries over all 6 keys
        torch.testing.assert_close(g.attend(q[:, :, -new:], k, v), full[:, :, -new:])
    with pytest.raises(ValueError, match="keys must include"):
        g.attend(q, k[:, :, :3], v[:, :, :3])


def test_cached_logits_equal_the_full_pass_in_any_chunks(target):
    idx = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    caches = g.new_caches(target)
    with torch.no_grad():
        pieces = [g.forward(target, idx[:, a:b], caches) for a, b in ((0, 7), (7, 8), (8, 20))]
        torch.testing.assert_close(torch.cat(pieces, 1), target(idx), rtol=1e-5, atol=1e-5)
    assert g.cache_length(caches) == 20
    heads, dim = 4, 8
    assert g.cache_bytes(caches) == 2 * 2 * heads * dim * 20 * 2 * 4  # layers x (k, v) x heads x dim x tokens x batch x 4


def test_greedy_with_and_without_cache_and_lm_generate_agree(target):
    cached = g.greedy(target, b"ab", 30)
    assert len(cached) == 30 and cached == g.greedy(target, b"ab", 30, cache=False)
    assert cached == lm.generate(target, b"ab", 30, top_k=1)


def test_int8_cache_is_smaller_and_close(target):
    x = torch.randn(1, 4, 5, 8)
    codes, scales = g.quantize_kv(x)
    assert codes.dtype == torch.int8 and scales.shape == (1, 4, 5, 1)
    torch.testing.assert_close(codes.float() * scales, x, atol=x.abs().max().item() / 127, rtol=0)
    idx = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(3))
    c32, c8 = g.new_caches(target), g.new_caches(target)
    with torch.no_grad():
        a, b = g.forward(target, idx, c32), g.forward(target, idx, c8, int8=True)
        torch.testing.assert_close(g.Int8KV(target)(idx), b)
    torch.testing.assert_close(a, b, rtol=0, atol=0.05)
    assert g.cache_bytes(c8) == g.cache_bytes(c32) * (8 + 4) // (8 * 4)  # 8 int8 codes + one fp32 scale vs 8 floats


@pytest.mark.parametrize("k", [1, 2, 3, 5, 9])
def test_speculative_writes_the_targets_greedy_text(target, draft, k):
    for prompt, n in ((b"a", 40), (b"def f(x):", 30), (b"xy", 0), (b"z", 47)):
        out, stats = g.speculative(target, draft, prompt, n, k)
        assert out == g.greedy(target, prompt, n)
        assert stats["accepted"] <= stats["proposed"]
        assert stats["rejected"] <= stats["rounds"] and stats["accepted"] + stats["rejected"] <= stats["proposed"]
        assert stats["accepted"] == sum(stats["per round"])


def test_a_perfect_draft_is_always_accepted(target):
    out, stats = g.speculative(target, target, b"a", 40, 4)
    assert stats["accepted"] == stats["proposed"] and stats["rounds"] == 8  # 5 bytes a round
    assert stats["rejected"] == 0 and stats["target passes"] == 8  # the 1-byte prompt needs no pass of its own


def test_accept_greedy():
    t = lambda *v: torch.tensor(v, dtype=torch.long)  # noqa: E731
    assert g.accept_greedy(t(1, 2, 3), t(1, 2, 3, 4)).tolist() == [1, 2, 3, 4]
    assert g.accept_greedy(t(1, 5, 3), t(1, 2, 3, 4)).tolist() == [1, 2]
    assert g.accept_greedy(t(), t(7)).tolist() == [7]
    with pytest.raises(ValueError, match="k \\+ 1"):
        g.accept_greedy(t(1, 2), t(1, 2))


def test_two_four_mask_keeps_exactly_two_of_four():
    scores = torch.rand(6, 32)
    mask = g.two_four_mask(scores)
    assert mask.dtype == torch.bool and (mask.reshape(6, 8, 4).sum(-1) == 2).all()
    kept = scores.reshape(6, 8, 4)[mask.reshape(6, 8, 4)].reshape(6, 8, 2)
    dropped = scores.reshape(6, 8, 4)[~mask.reshape(6, 8, 4)].reshape(6, 8, 2)
    assert (kept.min(-1).values >= dropped.max(-1).values).all()
    with pytest.raises(ValueError, match="divides by 4"):
        g.two_four_mask(torch.rand(2, 6))


def test_wanda_score_and_row_mask():
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    norms = torch.tensor([4.0, 1.0, 1.0, 0.5])
    assert torch.equal(g.wanda_scores(w, norms), torch.tensor([[4.0, 2.0, 3.0, 2.0], [16.0, 3.0, 2.0, 0.5]]))
    mask = g.row_mask(g.wanda_scores(w, norms), 0.5)
    assert mask.tolist() == [[True, False, True, False], [True, True, False, False]]
    assert g.row_mask(w.abs(), 0.5).tolist() == [[False, False, True, True], [True, True, False, False]]
    assert g.row_mask(w, 0.0).all()
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            g.row_mask(w, bad)
    with pytest.raises(ValueError, match="one input norm per input channel"):
        g.wanda_scores(w, norms[:3])


def test_input_norms_and_pruned(target):
    windows = torch.randint(0, 256, (3, 9), generator=torch.Generator().manual_seed(4))
    norms = g.input_norms(target, windows)
    assert set(norms) == {n for n, m in target.named_modules() if isinstance(m, torch.nn.Linear)}
    assert norms["blocks.0.mlp.fc2"].shape == (128,) and (norms["blocks.0.mlp.fc2"] >= 0).all()
    with pytest.raises(ValueError, match="calibration windows"):
        g.input_norms(target, torch.zeros(0, 9, dtype=torch.long))
    mask = g.two_four_mask(target.blocks[0].mlp.fc1.weight.abs())
    thin = g.pruned(target, {"blocks.0.mlp.fc1": mask})
    assert (thin.blocks[0].mlp.fc1.weight == 0).float().mean() == 0.5
    assert (target.blocks[0].mlp.fc1.weight != 0).all(), "the original is left alone"


def test_fine_tuning_after_pruning_keeps_the_mask_and_lowers_the_loss(target):
    text = torch.randint(0, 8, (4000,), generator=torch.Generator().manual_seed(5)).to(torch.uint8)  # easy text
    windows = lm.random_windows(text, 8, 33, torch.Generator().manual_seed(6))
    masks = {n: g.two_four_mask(m.weight.detach().abs()) for n, m in target.named_modules()
             if isinstance(m, torch.nn.Linear)}
    before = lm.bits_per_byte(g.pruned(target, masks), windows)
    tuned = g.fine_tuned(target, masks, text, lm.Recipe(steps=30, batch_size=4, lr=3e-3, warmup=3))
    assert lm.bits_per_byte(tuned, windows) < before
    for name, mask in masks.items():
        layer = tuned.get_submodule(name)
        assert not hasattr(layer, "weight_orig"), "the masks are made permanent"
        assert ((layer.weight != 0) <= mask).all(), f"{name}: a pruned weight came back"
    assert (target.blocks[0].mlp.fc1.weight != 0).all(), "the original is left alone"
    with pytest.raises(ValueError, match="mask"):
        g.fine_tuned(target, {"blocks.0.mlp.fc1": torch.ones(3, 3, dtype=torch.bool)}, text)


def test_bad_arguments_are_refused(target, draft):
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k \\(the draft's guesses"):
            g.speculative(target, draft, b"a", 5, k)
    with pytest.raises(ValueError, match="new bytes"):
        g.greedy(target, b"a", 48)
    with pytest.raises(ValueError, match="at least one byte"):
        g.greedy(target, b"", 3)
    with pytest.raises(ValueError, match="one list per block"):
        g.forward(target, torch.zeros(1, 1, dtype=torch.long), [[]])


def test_distillation_runs_and_lowers_the_loss(target):
    student = lm.GPT(lm.GPTConfig(context=16, width=16, layers=1, heads=2))
    text = torch.randint(0, 8, (400,), generator=torch.Generator().manual_seed(5)).to(torch.uint8)
    losses = g.distill_gpt(student, target, text, lm.Recipe(steps=30, batch_size=4, lr=1e-2, warmup=3), progress=False)
    assert len(losses) == 30 and sum(losses[-5:]) < sum(losses[:5])
    with pytest.raises(ValueError, match="recipe"):
        g.distill_gpt(student, target, text, lm.Recipe(steps=0, batch_size=4))
