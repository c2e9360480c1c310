"""Notebook 11 (architecture search): the lookup-table prediction, one step of aging evolution, the
Pareto front, the size of a larger space; and the challenge: a searched net that beats a hand-designed one."""
import random

from .. import nas
from . import Case, difference, exercise
from .challenges import define


def _table():
    """A made-up latency table over the whole space (the check must not depend on this machine's timings)."""
    rng = random.Random(11)
    return {layer: round(rng.uniform(0.01, 0.3), 4) for layer in nas.all_layers()}


@exercise("11.1", "the latency of a network is the sum of its layers' times", reference=nas.predict_latency,
          hint="Look up every layer of layers(arch) in ms and add them up.")
def _predict_cases():
    ms, rng = _table(), random.Random(0)
    smallest = tuple(nas.Stage("plain", 1, 3, 0.5) for _ in nas.STAGES)
    without_stem = {layer: t for layer, t in ms.items() if layer.kind != "stem"}
    return [Case("a random network", (nas.sample_arch(rng), ms)),
            Case("another random network", (nas.sample_arch(rng), ms)),
            Case("the smallest network of the space", (smallest, ms)),
            Case("a table without the stem's time", (smallest, without_stem), raises=KeyError)]


@exercise("11.2", "one step of aging evolution", reference=nas.evolution_step,
          hint="rng.sample(alive, sample) once, the best of those by score, mutate(parent, rng); "
               "the child joins the end, the first (oldest) member leaves.")
def _evolution_cases():
    score = {a: (a * 37) % 11 for a in range(100)}.get  # scores that are not in the order of the members

    def mutate(parent, rng):
        return (parent + rng.randint(1, 9)) % 100

    return [Case("a population of 6, tournament of 3", ([5, 17, 42, 8, 23, 61], score, random.Random(0), 3, mutate)),
            Case("the whole population in the tournament", ([5, 17, 42, 8], score, random.Random(1), 4, mutate)),
            Case("a tournament of one: a random parent", ([5, 17, 42, 8, 23], score, random.Random(2), 1, mutate)),
            Case("a tournament larger than the population", ([5, 17], score, random.Random(3), 3, mutate),
                 raises=ValueError)]


@exercise("11.3", "the Pareto front from scratch", reference=nas.pareto_front,
          compare=lambda got, want: difference(sorted(got) if isinstance(got, (list, tuple)) else got, sorted(want)),
          hint="A point is off the front if another is at least as good in both and better in one.")
def _front_cases():
    rng = random.Random(3)
    cloud = [(round(rng.uniform(0.5, 3), 2), round(rng.uniform(0.6, 0.95), 3)) for _ in range(30)]
    return [Case("30 random candidates", (cloud,)),
            Case("equal latencies and equal accuracies", ([(1.0, 0.8), (1.0, 0.9), (2.0, 0.9), (0.5, 0.9)],)),
            Case("two identical points: neither dominates the other", ([(1.0, 0.9), (1.0, 0.9), (2.0, 0.95)],)),
            Case("a single point", ([(1.0, 0.5)],)),
            Case("no points", ([],))]


exercise("11.4", "the size of the space with 7x7 kernels too",
         expected=lambda: (len(nas.SEARCH_SPACE["block"]) * len(nas.SEARCH_SPACE["depth"]) * 3
                           * len(nas.SEARCH_SPACE["width"])) ** len(nas.STAGES),
         hint="One more kernel option per stage: multiply the options of one stage, then one factor per stage.")


# ---------------------------------------------------------------- the challenge

def _hand_designed(block):
    """Notebook 04's small net, trained with its recipe (from the model cache)."""
    from functools import partial

    from ..data import load_dataset
    from ..env import FAST
    from ..models import small_net
    from ..train import cached_model, fit

    def train(model):  # notebook 04's recipe: Adam, lr 3e-3, batch 64, 3 epochs (4 quick ones in fast mode)
        fit(model, load_dataset("fashion-mnist"), epochs=4 if FAST else 3, lr=3e-3, batch_size=64)

    return cached_model(f"small_net_{block}", partial(small_net, block), train)


def _measure(model):
    import torch

    from ..data import load_dataset
    from ..measure import time_models
    from ..train import evaluate

    plain = _hand_designed("plain")
    test = load_dataset("fashion-mnist", train=False)
    times = time_models({"yours": model, "plain": plain}, torch.randn(1, 1, 28, 28), repeat=60)
    accuracy, plain_accuracy = evaluate(model, test), evaluate(plain, test)
    return {"accuracy": accuracy, "points over the plain net": 100 * (accuracy - plain_accuracy),
            "latency / plain net's": times.loc["yours", "latency_ms"] / times.loc["plain", "latency_ms"]}


define("11", "beat notebook 04's plain net: at least as accurate, and no slower at batch 1 (one thread)",
       _measure, targets={"points over the plain net": (">=", 0.0), "latency / plain net's": ("<=", 1.0)},
       score="accuracy")
