"""Notebook 13 (fast generation): attention over a key-value cache, the 2:4 mask and the accept rule of greedy
speculative decoding; and the challenge: speculative decoding at least 1.3x faster than plain greedy decoding,
with the same text."""
import torch

from .. import generation
from . import Case, exercise
from .challenges import define


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _qkv(batch, heads, new, total, dim, seed):
    g = _gen(seed)
    q = torch.randn(batch, heads, new, dim, generator=g, dtype=torch.float64)
    k = torch.randn(batch, heads, total, dim, generator=g, dtype=torch.float64)
    v = torch.randn(batch, heads, total, dim, generator=g, dtype=torch.float64)
    return q, k, v


# ---------------------------------------------------------------- 13.1: attention over a cache

@exercise("13.1", "attention of the newest positions over a key-value cache", reference=generation.attend,
          hint="S, T = keys.shape[2], q.shape[2]; scores = q @ keys.transpose(-2, -1) / D ** 0.5; query i sits at "
               "position S - T + i, so mask out keys j > S - T + i (torch.ones(T, S, dtype=torch.bool).tril(S - T)) with -inf; "
               "softmax over the last dimension, then @ values. Raise ValueError if S < T.")
def _attend_cases():
    return [Case("one new position after 5 cached ones (decoding): it sees all 6", _qkv(1, 2, 1, 6, 4, 0)),
            Case("no cache, 4 positions (prefill): plain causal attention", _qkv(1, 2, 4, 4, 4, 1)),
            Case("3 new positions after 4 cached ones (verifying guesses): the mask shifted by 4", _qkv(1, 2, 3, 7, 4, 2)),
            Case("a batch of 2, 3 heads of 8 channels, 2 new after 3 cached", _qkv(2, 3, 2, 5, 8, 3)),
            Case("4 queries but only 3 keys: the keys must include the new positions", _qkv(1, 1, 4, 3, 4, 4),
                 raises=ValueError)]


# ---------------------------------------------------------------- 13.2: the 2:4 mask

@exercise("13.2", "2:4 semi-structured mask: two of every four consecutive weights of a row kept",
          reference=generation.two_four_mask,
          hint="groups = scores.reshape(rows, -1, 4); keep = groups.topk(2, dim=-1).indices; a bool tensor of "
               "zeros .scatter_(-1, keep, True), reshaped back to scores.shape. Raise ValueError if a row's "
               "length does not divide by 4.")
def _two_four_cases():
    g = _gen(5)
    return [Case("a [2, 8] matrix of scores: two groups of four per row", (torch.rand(2, 8, generator=g),)),
            Case("a [3, 16] matrix", (torch.rand(3, 16, generator=g),)),
            Case("one row [4, 3, 2, 1, 1.5, 2.5, 0.5, 3.5]: the two largest of each group of four",
                 (torch.tensor([[4.0, 3.0, 2.0, 1.0, 1.5, 2.5, 0.5, 3.5]]),)),
            Case("scores below zero: still the two largest, not the largest in size", (torch.randn(2, 8, generator=g),)),
            Case("rows of 6 do not split into groups of four", (torch.rand(2, 6, generator=g),), raises=ValueError)]


# ---------------------------------------------------------------- 13.3: the accept rule

def _t(*values):
    return torch.tensor(values, dtype=torch.long)


@exercise("13.3", "greedy speculative decoding: the bytes one round writes", reference=generation.accept_greedy,
          hint="n = how many guesses match verified at the start, before the first mismatch "
               "((proposed == verified[:-1]).long().cumprod(0).sum()); return torch.cat([proposed[:n], verified[n:n + 1]]). "
               "Raise ValueError unless len(verified) == len(proposed) + 1.")
def _accept_cases():
    return [Case("all 4 guesses right: they and the target's next choice, 5 bytes", (_t(1, 2, 3, 4), _t(1, 2, 3, 4, 5))),
            Case("the first guess wrong: only the target's choice", (_t(7, 2, 3), _t(1, 2, 3, 4))),
            Case("the third guess wrong: two guesses, then the target's correction", (_t(1, 2, 9, 4), _t(1, 2, 3, 4, 5))),
            Case("a guess after a mismatch does not count, even when it agrees", (_t(1, 8, 3, 4), _t(1, 2, 3, 4, 5))),
            Case("no guesses (k = 0): one byte, the target's", (_t(), _t(6))),
            Case("4 guesses need 5 verified choices, not 4", (_t(1, 2, 3, 4), _t(1, 2, 3, 4)), raises=ValueError)]


# ---------------------------------------------------------------- the challenge

PROMPT = b"    def forward(self, input: Tensor) -> Tensor:\n"  # notebook 13's prompt


def _measure(entry):
    from .. import lm
    from ..env import FAST
    from ..measure import time_models

    if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], torch.nn.Module)
            and isinstance(entry[1], int) and not isinstance(entry[1], bool)):
        raise TypeError("challenge 13 takes (draft, k): your draft GPT and its guesses per round, a whole number, "
                        "e.g. challenge('13', (draft, 4))")
    draft, k = entry
    target, n = lm.trained_gpt(), 64 if FAST else 200
    text, stats = generation.speculative(target, draft, PROMPT, n, k)
    race = time_models({"greedy, KV cache": lambda _: generation.greedy(target, PROMPT, n),
                        "speculative": lambda _: generation.speculative(target, draft, PROMPT, n, k)},
                       torch.zeros(1), threads=1, repeat=5 if FAST else 15, warmup=1)
    return {"same text as plain greedy": float(text == generation.greedy(target, PROMPT, n)),
            "speed-up vs greedy with the KV cache": float(race.loc["speculative", "speedup"]),
            "acceptance": stats["accepted"] / max(stats["proposed"], 1),
            "draft parameters": sum(p.numel() for p in draft.parameters())}


define("13", "speculative decoding at least 1.3x faster than greedy decoding with the KV cache (one thread), "
       "writing exactly the same bytes", _measure,
       targets={"same text as plain greedy": (">=", 1.0), "speed-up vs greedy with the KV cache": (">=", 1.3)},
       score="speed-up vs greedy with the KV cache")
