"""Fast generation with the byte-level GPT of :mod:`helpers.lm` (notebook 13).

* :func:`attend` and :func:`forward`: attention of the newest positions over a key-value cache, and the GPT's
  forward pass with a cache that accepts several new bytes at once (``lm.GPT.forward`` takes one at a time
  once its cache is filled; speculative decoding verifies several). Caches have ``lm``'s layout: one list
  ``[keys, values]`` per block, each ``[batch, heads, positions, head_dim]``.
* :func:`greedy`: greedy decoding with or without the cache, optionally with an int8 cache
  (:func:`quantize_kv`: one scale per head and per position) ; :class:`Int8KV` wraps a GPT so that
  :func:`helpers.lm.bits_per_byte` measures it.
* :func:`input_norms`, :func:`wanda_scores`, :func:`row_mask`, :func:`two_four_mask`, :func:`pruned`:
  magnitude and Wanda pruning, unstructured per output row or 2:4 semi-structured; :func:`fine_tuned`: a short
  training after pruning with the masks held.
* :func:`accept_greedy` and :func:`speculative`: greedy speculative decoding with a draft model;
  :func:`draft_gpt`: the draft, distilled from the notebook-12 GPT and cached like ``lm.trained_gpt``.
"""
import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .env import FAST, on_device, set_seed
from .lm import GPT, GPTConfig, Recipe, corpus, random_windows


# ---------------------------------------------------------------- attention over a cache

def attend(q, keys, values):
    """Attention of the ``T`` newest positions over all ``S`` positions (``S >= T``).

    ``q``: ``[B, H, T, D]``, the queries of positions ``S - T .. S - 1``; ``keys``, ``values``: ``[B, H, S, D]``
    (the cache followed by the new positions). Query ``i`` sees keys ``0 .. S - T + i``: causal, shifted by
    the ``S - T`` positions already in the cache. Returns ``[B, H, T, D]``.
    """
    if q.dim() != 4 or keys.shape != values.shape or keys.dim() != 4 or q.shape[:2] != keys.shape[:2] \
            or q.shape[3] != keys.shape[3]:
        raise ValueError(f"attend expects q [B, H, T, D] and keys, values [B, H, S, D]; got {tuple(q.shape)}, "
                         f"{tuple(keys.shape)}, {tuple(values.shape)}")
    T, S = q.shape[2], keys.shape[2]
    if S < T:
        raise ValueError(f"{T} queries but only {S} keys: the keys must include the new positions")
    if T == 1:  # one new position sees everything
        return F.scaled_dot_product_attention(q, keys, values)
    seen = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=seen)


def new_caches(model):
    """Empty caches for ``model``: one list per block."""
    return [[] for _ in model.blocks]


def cache_length(caches):
    """The number of positions a cache holds."""
    return caches[0][0].shape[2] if caches and caches[0] else 0


def truncate(caches, length):
    """Keep the first ``length`` positions of every layer's cache (in place): rejected guesses are forgotten."""
    for cache in caches:
        if cache:
            cache[:] = [t[:, :, :length] for t in cache]


def quantize_kv(x):
    """Symmetric int8 codes of keys or values ``[B, H, T, D]``, one fp32 scale per head and position:
    ``(codes int8 [B, H, T, D], scales [B, H, T, 1])``; ``codes * scales`` gives them back."""
    scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    return torch.round(x / scale).clamp(-127, 127).to(torch.int8), scale


def forward(model, idx, caches, *, int8=False):
    """``model``'s logits for the new bytes ``idx`` ``[B, T]``, after the positions held in ``caches`` (which
    grow by ``T``). With ``int8`` the cache holds int8 codes and scales (:func:`quantize_kv`) instead of floats:
    ``[k_codes, k_scales, v_codes, v_scales]`` per block, and attention reads them back dequantized."""
    if not isinstance(model, GPT):
        raise TypeError(f"forward expects an lm.GPT, got {type(model).__name__}")
    if len(caches) != len(model.blocks):
        raise ValueError(f"caches must have one list per block ({len(model.blocks)}), got {len(caches)}")
    start = cache_length(caches)
    T = idx.shape[1]
    if T < 1 or start + T > model.config.context:
        raise ValueError(f"{start} cached + {T} new positions: this GPT sees 1 to {model.config.context}")
    x = model.wte(idx) + model.wpe(torch.arange(start, start + T, device=idx.device))
    for block, cache in zip(model.blocks, caches):
        attn = block.attn
        B, _, C = x.shape
        heads = attn.heads
        q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in attn.qkv(block.ln1(x)).split(C, dim=2))
        if int8:
            new = [*quantize_kv(k), *quantize_kv(v)]
            cache[:] = [torch.cat([old, n], dim=2) for old, n in zip(cache, new)] if cache else new
            k, v = cache[0].float() * cache[1], cache[2].float() * cache[3]
        else:
            cache[:] = [torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)] if cache else [k, v]
            k, v = cache
        y = attend(q, k, v)
        x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln2(x))
    return F.linear(model.ln_f(x), model.wte.weight)


class Int8KV(nn.Module):
    """A GPT whose attention reads its keys and values through int8 (:func:`quantize_kv`), for
    :func:`helpers.lm.bits_per_byte`: the same numbers an int8 cache gives during generation."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt
        self.config = gpt.config
        self.blocks = gpt.blocks

    def forward(self, idx):
        return forward(self.gpt, idx, new_caches(self.gpt), int8=True)


def cache_bytes(caches):
    """The bytes a cache's tensors hold."""
    return sum(t.numel() * t.element_size() for cache in caches for t in cache)


# ---------------------------------------------------------------- greedy decoding

def _prompt_ids(prompt, model):
    if isinstance(prompt, str):
        prompt = prompt.encode()
    if not isinstance(prompt, (bytes, bytearray)) or not prompt:
        raise ValueError("the prompt must be at least one byte (bytes or str)")
    return torch.tensor([list(prompt)], device=next(model.parameters()).device)


def _check_length(n, prompt_length, model):
    room = model.config.context - prompt_length
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= room:
        raise ValueError(f"the number of new bytes must be a whole number from 0 to {room}, got {n!r}")


@torch.inference_mode()
def greedy(model, prompt, n, *, cache=True, int8=False):
    """``n`` new bytes after ``prompt``, each the most likely one. ``cache=False`` recomputes the whole text for
    every byte (the same bytes, slower); ``int8`` keeps the cache in int8."""
    idx = _prompt_ids(prompt, model)
    _check_length(n, idx.shape[1], model)
    caches = new_caches(model)
    out = []
    logits = forward(model, idx, caches, int8=int8)[:, -1] if cache else model(idx)[:, -1]
    for step in range(n):
        byte = logits.argmax(-1, keepdim=True)
        out.append(byte.item())
        if step == n - 1:
            break
        if cache:
            logits = forward(model, byte, caches, int8=int8)[:, -1]
        else:
            idx = torch.cat([idx, byte], dim=1)
            logits = model(idx)[:, -1]
    return bytes(out)


# ---------------------------------------------------------------- pruning: magnitude, Wanda, 2:4

@torch.inference_mode()
def input_norms(model, windows):
    """``{name: ||X_j||_2}`` for every ``nn.Linear`` of ``model``: the L2 norm of each input channel over all
    the tokens of ``windows`` (``[N, T + 1]`` bytes, the last byte of each unused), as Wanda needs."""
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError("input_norms needs calibration windows [N >= 1, T + 1 >= 2] of bytes, e.g. "
                         "lm.calibration_windows()")
    squares, hooks = {}, []
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            def hook(module, inputs, output, name=name):
                x = inputs[0].detach().flatten(0, -2).double()
                squares[name] = squares.get(name, 0) + (x * x).sum(0)
            hooks.append(layer.register_forward_hook(hook))
    try:
        was_training = model.training
        model.eval()
        for batch in windows.long().split(8):
            model(batch[:, :-1].to(next(model.parameters()).device))
        model.train(was_training)
    finally:
        for h in hooks:
            h.remove()
    return {name: s.sqrt().float().cpu() for name, s in squares.items()}


def wanda_scores(weight, norms):
    """Wanda's score of every weight (Sun et al., ICLR 2024): ``|W_ij| * ||X_j||_2``, ``[out, in]``."""
    if norms.dim() != 1 or norms.shape[0] != weight.shape[1]:
        raise ValueError(f"one input norm per input channel: weight {tuple(weight.shape)}, norms {tuple(norms.shape)}")
    return weight.abs() * norms[None, :]


def _check_sparsity(sparsity):
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity!r}")


def row_mask(scores, sparsity):
    """Keep, in every row (output channel), the ``1 - sparsity`` share of weights with the highest scores;
    the ``round(sparsity * in_features)`` lowest are pruned. A bool mask, ``True`` = kept."""
    _check_sparsity(sparsity)
    pruned_ = round(sparsity * scores.shape[1])
    mask = torch.ones_like(scores, dtype=torch.bool)
    if pruned_:
        lowest = scores.topk(pruned_, dim=1, largest=False).indices
        mask.scatter_(1, lowest, False)
    return mask


def two_four_mask(scores):
    """2:4 semi-structured sparsity: in every group of four consecutive weights of a row, keep the two with the
    highest scores (ties: the first ones). A bool mask, ``True`` = kept."""
    if scores.dim() != 2 or scores.shape[1] % 4:
        raise ValueError(f"2:4 needs rows whose length divides by 4, got shape {tuple(scores.shape)}")
    groups = scores.reshape(scores.shape[0], -1, 4)
    keep = groups.topk(2, dim=-1, sorted=False).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True).reshape(scores.shape)


def pruned(model, masks):
    """A copy of ``model`` whose Linear weights are multiplied by ``masks`` (``{name: bool mask}``)."""
    copy_ = copy.deepcopy(model)
    for name, mask in masks.items():
        layer = copy_.get_submodule(name)
        if mask.shape != layer.weight.shape:
            raise ValueError(f"{name}: mask {tuple(mask.shape)} for a weight {tuple(layer.weight.shape)}")
        layer.weight.data = layer.weight.data * mask
    return copy_


TUNE_FULL = Recipe(steps=150, batch_size=16, lr=3e-4, warmup=15)  # the short fine-tune after pruning
TUNE_FAST = Recipe(steps=20, batch_size=4, lr=3e-4, warmup=5)


def fine_tuned(model, masks, text, recipe=None, *, seed=0, progress=False):
    """A copy of ``model`` pruned by ``masks`` (``{name: bool mask}`` of Linear weights) and trained a little
    further with the masks held: ``torch.nn.utils.prune.custom_from_mask`` makes each weight ``weight_orig *
    mask``, so the pruned entries of ``weight_orig`` get a zero gradient and the weight the layer uses stays 0
    there whatever the optimizer does (2:4 stays 2:4); the masks are then made permanent
    (``prune.remove``). ``recipe`` defaults to :data:`TUNE_FAST` or :data:`TUNE_FULL`; ``text`` is training text
    (``lm.corpus().train``), never the held-out files. ``model`` is left unchanged."""
    from torch.nn.utils import prune

    from .lm import train_gpt

    net = pruned(model, masks)  # checks the shapes
    for name, mask in masks.items():
        prune.custom_from_mask(net.get_submodule(name), "weight", mask)
    train_gpt(net, text, recipe or (TUNE_FAST if FAST else TUNE_FULL), seed=seed, progress=progress)
    for name in masks:
        prune.remove(net.get_submodule(name), "weight")
    return net


# ---------------------------------------------------------------- speculative decoding

def accept_greedy(proposed, verified):
    """The bytes one round of greedy speculative decoding writes.

    ``proposed``: the draft's ``k`` guesses (a 1-D long tensor); ``verified``: the target's ``k + 1`` greedy
    choices after the text, after guess 1, ..., after guess ``k``. The guesses are kept while they match the
    target's choice at their place; at the first mismatch the target's choice replaces the guess and the round
    ends; if all ``k`` match, the target's next choice comes for free. Returns ``n + 1`` bytes for ``n``
    accepted guesses.
    """
    if proposed.dim() != 1 or verified.dim() != 1 or len(verified) != len(proposed) + 1:
        raise ValueError(f"k guesses need k + 1 verified choices; got {tuple(proposed.shape)} and {tuple(verified.shape)}")
    agree = (proposed == verified[:-1]).long()
    n = int(agree.cumprod(0).sum())
    return torch.cat([proposed[:n], verified[n:n + 1]])


@torch.inference_mode()
def speculative(target, draft, prompt, n, k):
    """``n`` bytes after ``prompt`` by greedy speculative decoding: the draft guesses ``k`` bytes one at a time,
    the target checks them in one pass, :func:`accept_greedy` keeps the right ones. The bytes are those of
    ``greedy(target, prompt, n)`` (up to ties of floating-point rounding). Returns ``(bytes, stats)``, stats
    counting the rounds, the guesses proposed, accepted and rejected (at most one a round: the guesses after it
    are never judged), the two models' forward passes (the prompt's included), and the guesses accepted in each
    round (``"per round"``)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (the draft's guesses per round) must be a whole number >= 1, got {k!r}")
    if draft.config.context < target.config.context:
        raise ValueError("the draft must see at least as many positions as the target")
    idx = _prompt_ids(prompt, target)
    _check_length(n, idx.shape[1], target)
    t_caches, d_caches = new_caches(target), new_caches(draft)
    stats = {"rounds": 0, "proposed": 0, "accepted": 0, "rejected": 0, "target passes": 0, "draft passes": 0,
             "per round": []}
    if idx.shape[1] > 1:  # the prompt, but its last byte: that one is fed with the first guesses
        forward(target, idx[:, :-1], t_caches)
        forward(draft, idx[:, :-1], d_caches)
        stats["target passes"] += 1  # counted, as greedy's pass over the prompt is
        stats["draft passes"] += 1
    pending = idx[:, -1:]
    out = []
    while len(out) < n:
        base = cache_length(t_caches)
        k_now = min(k, n - len(out) - 1)
        guesses, byte = [], pending
        for _ in range(k_now):
            byte = forward(draft, byte, d_caches)[:, -1].argmax(-1, keepdim=True)
            guesses.append(byte)
        stats["draft passes"] += k_now
        proposed = torch.cat(guesses, dim=1) if guesses else pending[:, :0]
        logits = forward(target, torch.cat([pending, proposed], dim=1), t_caches)
        verified = logits[0].argmax(-1)
        written = accept_greedy(proposed[0], verified)
        accepted = len(written) - 1
        truncate(t_caches, base + 1 + accepted)
        truncate(d_caches, base + 1 + min(accepted, k_now - 1) if k_now else base)
        if k_now == 0:
            forward(draft, pending, d_caches)
            stats["draft passes"] += 1
        elif accepted == k_now:  # the draft never saw its last guess
            forward(draft, proposed[:, -1:], d_caches)
            stats["draft passes"] += 1
        out.extend(written.tolist())
        pending = written[-1:].view(1, 1)
        stats["rounds"] += 1
        stats["target passes"] += 1
        stats["proposed"] += k_now
        stats["accepted"] += accepted
        stats["rejected"] += accepted < k_now  # the round ended at a guess the target did not make
        stats["per round"].append(accepted)
    return bytes(out[:n]), stats


# ---------------------------------------------------------------- the draft model

# One block: at this size a pass costs about the same per operation whatever the width, so depth sets the
# draft's price (notebook 13 measures a draft pass against a target pass).
DRAFT_CONFIG = GPTConfig(context=256, width=128, layers=1, heads=4)
DRAFT_FULL = Recipe(steps=1000, batch_size=16)
DRAFT_FAST = Recipe(steps=60, batch_size=4, warmup=10)


def distill_gpt(student, teacher, text, recipe, *, seed=0, progress=True):
    """Train ``student`` to match ``teacher``'s next-byte distributions on random windows of ``text``:
    the loss is the cross-entropy of the student against the teacher's probabilities (soft labels, temperature
    1), which is the KL divergence up to the teacher's entropy. Returns the losses (nats per byte)."""
    if not isinstance(recipe, Recipe) or recipe.steps < 1 or recipe.batch_size < 1:
        raise ValueError(f"recipe must be a Recipe with steps >= 1 and batch_size >= 1, got {recipe!r}")
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(student.parameters(), lr=recipe.lr, betas=(0.9, 0.95),
                                  weight_decay=recipe.weight_decay)

    def lr_at(step):
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        done = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
        return recipe.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * done)))

    losses = []
    teacher.eval()
    student.train()
    with on_device(student, teacher) as where:
        for step in tqdm(range(recipe.steps), desc="distilling the draft", disable=not progress, leave=False):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch = random_windows(text, recipe.batch_size, student.config.context, generator).to(where)[:, :-1]
            with torch.no_grad():
                soft = F.softmax(teacher(batch), -1)
            loss = -(soft * F.log_softmax(student(batch), -1)).sum(-1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
    student.eval()
    return losses


def draft_gpt(teacher, recipe=None):
    """The draft of notebook 13: :data:`DRAFT_CONFIG` (1 block of width 128) distilled from ``teacher`` (the
    notebook-12 GPT) on the training text; trained once, then loaded from ``data/models/`` (fast and full mode
    keep separate files, written atomically: :func:`helpers.cached_model`)."""
    from .train import cached_model

    recipe = recipe or (DRAFT_FAST if FAST else DRAFT_FULL)
    c = DRAFT_CONFIG
    name = f"draft_gpt_c{c.context}_w{c.width}_l{c.layers}_h{c.heads}_s{recipe.steps}_b{recipe.batch_size}"
    def train(model):
        threads = torch.get_num_threads()
        if FAST:  # the fast draft is tiny: one thread is as quick, and immune to a busy second core
            torch.set_num_threads(1)
        try:
            distill_gpt(model, teacher, corpus().train, recipe)
        finally:
            torch.set_num_threads(threads)

    return cached_model(name, lambda: GPT(DRAFT_CONFIG), train)
