"""A small language model for notebook 12: a byte-level GPT, the text it learns from, its training and its cache.

* :func:`corpus`: the text. The Python sources of PyTorch's own ``torch/nn`` package (``torch/nn/**/*.py``,
  136 files, about 1.9 MB) at the pinned version, torch 2.14.1: every install of the course has them byte
  for byte, so nobody downloads anything, and a SHA-256 of their concatenation is checked when they are
  read. Every tenth file (sorted by path) is held out for evaluation; the rest is for training.
* :class:`GPT`: a decoder-only transformer in the shape of GPT-2 (token and position embeddings, blocks of
  pre-LayerNorm causal self-attention and MLP, an output head tied to the token embedding), reading and
  writing bytes (256 tokens), so that no tokenizer is needed.
* :func:`train_gpt` and :func:`trained_gpt`: AdamW on random windows of the training text; trained once
  and cached like the course's other models (:func:`helpers.cached_model`).
* :func:`bits_per_byte`: the quality measure, the mean cross-entropy on held-out text in bits per byte
  (perplexity per byte is ``2 ** bits_per_byte``).
* :func:`generate`: text, one byte at a time, with a key-value cache (:class:`GPT`'s ``forward`` keeps it).
"""
import contextlib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .env import FAST, on_device, set_seed

CORPUS_TORCH = "2.14.1"     # the pinned torch whose torch/nn sources are the corpus
CORPUS_GLOB = "nn/**/*.py"  # inside the torch package
CORPUS_SHA256 = "d0ba475307eecea94249af7edbc470006ea20bd06886e218597cfe91f9614bf1"
HELD_OUT_EVERY = 10         # files 9, 19, 29 ... (0-based, sorted by path) are held out


class CorpusMismatchError(RuntimeError):
    """The torch/nn sources of this install are not the bytes the course was built on."""


@dataclass(frozen=True)
class Corpus:
    """The text, as uint8 tensors of bytes, and where it came from."""

    train: torch.Tensor
    held_out: torch.Tensor
    train_files: tuple
    held_out_files: tuple
    sha256: str


def corpus_files():
    """The corpus's files, as paths relative to site-packages (``torch/nn/...``), sorted."""
    root = Path(torch.__file__).resolve().parent
    return sorted(path.relative_to(root.parent).as_posix() for path in root.glob(CORPUS_GLOB))


def corpus(check=True):
    """The text of ``torch/nn/**/*.py`` of this install, split into training and held-out files.

    The files are read in sorted order; every ``HELD_OUT_EVERY``-th one is held out. With ``check`` (the
    default) the SHA-256 of all the files concatenated must be :data:`CORPUS_SHA256`, that of torch 2.14.1:
    another torch version has other sources, and every figure of notebook 12 would differ.
    """
    site = Path(torch.__file__).resolve().parent.parent
    files = corpus_files()
    texts = [(site / name).read_bytes() for name in files]
    digest = hashlib.sha256(b"".join(texts)).hexdigest()
    if check and digest != CORPUS_SHA256:
        raise CorpusMismatchError(
            f"the corpus of notebook 12, torch/nn/**/*.py of torch {CORPUS_TORCH}, differs in this install "
            f"(torch {torch.__version__}, {len(files)} files, SHA-256 {digest[:12]}..., expected "
            f"{CORPUS_SHA256[:12]}...). Install the course's pinned packages (make install), or pass "
            "check=False to train on these sources anyway (the figures will then differ from the course's).")
    held = [i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 for i in range(len(files))]

    def join(keep):
        data = b"".join(text for text, h in zip(texts, held) if h == keep)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    return Corpus(train=join(False), held_out=join(True),
                  train_files=tuple(f for f, h in zip(files, held) if not h),
                  held_out_files=tuple(f for f, h in zip(files, held) if h), sha256=digest)


def random_windows(data, count, length, generator):
    """``count`` windows of ``length + 1`` bytes at random places in ``data``, as a long tensor
    ``[count, length + 1]``: inputs are ``[:, :-1]``, the bytes to predict ``[:, 1:]``."""
    if len(data) < length + 1:
        raise ValueError(f"the text has {len(data)} bytes, fewer than one window of {length + 1}")
    starts = torch.randint(0, len(data) - length, (count,), generator=generator)
    return torch.stack([data[s:s + length + 1] for s in starts.tolist()]).long()


def even_windows(data, count, length):
    """``count`` windows of ``length + 1`` bytes spread evenly over ``data`` (the whole text when ``count``
    windows cover it), as a long tensor ``[count, length + 1]``; the same windows on every call."""
    if len(data) < length + 1:
        raise ValueError(f"the text has {len(data)} bytes, fewer than one window of {length + 1}")
    count = min(count, len(data) // (length + 1))
    starts = torch.linspace(0, len(data) - length - 1, count).long()
    return torch.stack([data[s:s + length + 1] for s in starts.tolist()]).long()


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class GPTConfig:
    """The shape of a :class:`GPT`: 256 byte tokens, ``context`` positions, ``layers`` blocks of ``width``
    channels with ``heads`` attention heads, an MLP ``4 * width`` wide."""

    context: int = 256
    width: int = 256
    layers: int = 4
    heads: int = 8
    vocab: int = 256

    def __post_init__(self):
        for name in ("context", "width", "layers", "heads", "vocab"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")


def split_heads(t, heads):
    """``[B, T, C]`` -> ``[B, heads, T, C // heads]``: each head gets its own slice of the channels."""
    B, T, C = t.shape
    return t.view(B, T, heads, C // heads).transpose(1, 2)


def merge_heads(y):
    """``[B, heads, T, D]`` -> ``[B, T, heads * D]``: the heads' outputs side by side again."""
    B, H, T, D = y.shape
    return y.transpose(1, 2).reshape(B, T, H * D)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and the positions before it."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)  # queries, keys and values in one matrix
        self.proj = nn.Linear(width, width, bias=False)

    def forward(self, x, cache=None):
        C = x.shape[-1]
        qkv = self.qkv(x)
        q, k, v = (split_heads(qkv[..., i * C:(i + 1) * C], self.heads) for i in range(3))
        if cache is not None:  # generation: this layer's keys and values of the bytes so far, kept for the next
            if cache:
                if q.shape[2] > 1:
                    raise ValueError("with a filled key-value cache, feed one new byte at a time")
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=q.shape[2] > 1)
        return self.proj(merge_heads(y))


class MLP(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width, bias=False)
        self.fc2 = nn.Linear(4 * width, width, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(width), CausalSelfAttention(width, heads)
        self.ln2, self.mlp = nn.LayerNorm(width), MLP(width)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A byte-level GPT: ``forward(idx)`` maps bytes ``[B, T]`` (a long tensor, T <= context) to the logits of
    the next byte at every position, ``[B, T, 256]``.

    ``caches`` (generation): one list per block, empty at first, where each attention layer keeps its keys
    and values; then feed one byte at a time. The output head is the token embedding's matrix (tied), so
    the only ``nn.Linear`` layers are the four of each block: ``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
    ``mlp.fc2``, none with a bias.
    """

    def __init__(self, config=None):
        super().__init__()
        config = config or GPTConfig()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPT(config) expects a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.wte = nn.Embedding(config.vocab, config.width)    # token (byte) embedding, also the output head
        self.wpe = nn.Embedding(config.context, config.width)  # position embedding
        self.blocks = nn.ModuleList(Block(config.width, config.heads) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width)
        for name, p in self.named_parameters():  # GPT-2's initialisation
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * config.layers) if name.endswith(("proj.weight", "fc2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, caches=None):
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long:
            raise TypeError("GPT expects a long tensor of bytes [batch, length], e.g. torch.tensor([list(b'def ')])")
        start = caches[0][0].shape[2] if caches and caches[0] else 0
        if start + idx.shape[1] > self.config.context:
            raise ValueError(f"{start + idx.shape[1]} positions: this GPT sees at most {self.config.context}")
        x = self.wte(idx) + self.wpe(torch.arange(start, start + idx.shape[1], device=idx.device))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i])
        return F.linear(self.ln_f(x), self.wte.weight)


# ---------------------------------------------------------------- quality and text

def bits_per_byte(model, windows, batch_size=32):
    """Mean cross-entropy of ``model``'s next-byte predictions on ``windows`` (``[N, T + 1]`` bytes, e.g. from
    :func:`even_windows`), in bits per byte. Every byte but the first of each window is predicted from the
    bytes before it in its window. Runs on the GPU when there is one; the model's mode is given back."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"bits_per_byte expects a model, got {type(model).__name__}")
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[0] == 0 or windows.shape[1] < 2:
        raise ValueError("bits_per_byte expects windows [N >= 1, T + 1 >= 2] of bytes, e.g. even_windows(text, 64, 256)")
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with _lent(model) as where, torch.inference_mode():
            for batch in windows.long().split(batch_size):
                batch = batch.to(where)
                logits = model(batch[:, :-1])
                total += F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten(), reduction="sum").item()
    finally:
        model.train(was_training)
    return total / (windows.shape[0] * (windows.shape[1] - 1)) / math.log(2)


def generate(model, prompt, length, *, temperature=0.8, top_k=20, seed=0):
    """``length`` new bytes after ``prompt`` (bytes or str), sampled one at a time with a key-value cache.

    Each byte is drawn from the ``top_k`` most likely ones, their probabilities sharpened by ``temperature``
    (``top_k=1``: always the most likely byte). The same ``seed`` gives the same text. Returns the new bytes.
    """
    if isinstance(prompt, str):
        prompt = prompt.encode()
    if not isinstance(prompt, (bytes, bytearray)) or not prompt:
        raise ValueError("generate needs a prompt of at least one byte (bytes or str)")
    context = model.config.context
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= context - len(prompt):
        raise ValueError(f"length must be a whole number from 0 to {context - len(prompt)} (the model sees "
                         f"{context} bytes; the prompt takes {len(prompt)}), got {length!r}")
    if not temperature > 0 or not 1 <= top_k <= 256:
        raise ValueError(f"temperature must be > 0 and top_k from 1 to 256, got {temperature!r} and {top_k!r}")
    generator = torch.Generator().manual_seed(seed)
    caches = [[] for _ in model.blocks]
    out = []
    with torch.inference_mode():
        logits = model(torch.tensor([list(prompt)], device=_where(model)), caches)[:, -1]
        for _ in range(length):
            top, index = torch.topk(logits.float().cpu() / temperature, top_k)
            byte = index[0, torch.multinomial(F.softmax(top, -1), 1, generator=generator)].item()
            out.append(byte)
            logits = model(torch.tensor([[byte]], device=_where(model)), caches)[:, -1]
    return bytes(out)


def _where(model):
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _lent(model):
    """:func:`helpers.env.on_device` (the GPU when there is one), except for a model whose weights are tensor
    subclasses (torchao's quantized weights, which may have kernels for one device only): it stays where it is."""
    if any(type(t) not in (torch.Tensor, nn.Parameter) for t in model.parameters()):
        return contextlib.nullcontext(_where(model))
    return on_device(model)


# ---------------------------------------------------------------- training and the cache

@dataclass(frozen=True)
class Recipe:
    """How :func:`trained_gpt` trains: AdamW, linear warm-up then cosine decay to a tenth of ``lr``."""

    steps: int
    batch_size: int
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1


FULL_RECIPE = Recipe(steps=1500, batch_size=16)  # 16 windows of 256 bytes a step: 6.1 M bytes in all
FAST_RECIPE = Recipe(steps=200, batch_size=4, warmup=20)


def train_gpt(model, text, recipe, *, seed=0, progress=True):
    """Train ``model`` on random windows of ``text`` (a uint8 tensor) with ``recipe``; returns the training
    losses (nats per byte, one per step). Runs on the GPU when there is one and gives the model back on its
    device, in eval mode."""
    if not isinstance(model, GPT):
        raise TypeError(f"train_gpt expects a GPT, got {type(model).__name__}")
    if not isinstance(recipe, Recipe) or recipe.steps < 1 or recipe.batch_size < 1:
        raise ValueError(f"recipe must be a Recipe with steps >= 1 and batch_size >= 1, got {recipe!r}")
    set_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))

    def lr_at(step):
        if step < recipe.warmup:
            return recipe.lr * (step + 1) / recipe.warmup
        progress_ = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
        return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_)))

    losses = []
    model.train()
    with on_device(model) as where:
        bar = tqdm(range(recipe.steps), desc="training the GPT", disable=not progress, leave=False)
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch = random_windows(text, recipe.batch_size, model.config.context, generator).to(where)
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if step % 10 == 0:
                bar.set_postfix(bits_per_byte=f"{loss.item() / math.log(2):.3f}")
    model.eval()
    return losses


def trained_gpt(config=None, recipe=None):
    """The course's byte-level GPT trained on the training files of :func:`corpus`, from the cache.

    The first call trains it: :data:`FULL_RECIPE` (1,500 steps of 16 windows of 256 bytes: about 18 minutes
    of one core on the machine the course was written on; yours prints its own time), or :data:`FAST_RECIPE` in fast
    mode (200 steps of 4 windows, a rough model); later calls load it from ``data/models/`` (fast and full mode
    keep separate files).
    """
    from .train import cached_model

    config = config or GPTConfig()
    recipe = recipe or (FAST_RECIPE if FAST else FULL_RECIPE)
    name = (f"gpt_torch_nn_c{config.context}_w{config.width}_l{config.layers}_h{config.heads}"
            f"_s{recipe.steps}_b{recipe.batch_size}")
    return cached_model(name, lambda: GPT(config), lambda model: train_gpt(model, corpus().train, recipe))


def held_out_windows(count=None, context=None):
    """The course's evaluation text: ``count`` windows of ``context + 1`` bytes spread evenly over the held-out
    files (128 windows of 257 bytes, 24 in fast mode), the same on every call."""
    return even_windows(corpus().held_out, count or (24 if FAST else 128), context or GPTConfig().context)


def calibration_windows(count=None, context=None, seed=0):
    """The course's calibration text for GPTQ, AWQ and SmoothQuant: ``count`` windows at random places in the
    training files (64 windows of 257 bytes, 16 in fast mode), never the held-out text."""
    return random_windows(corpus().train, count or (16 if FAST else 64), context or GPTConfig().context,
                          torch.Generator().manual_seed(seed))
