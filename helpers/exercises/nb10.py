"""Notebook 10 (compression pipeline): the low rank that fits a parameter budget, the step of the pipeline
that fits a size and latency budget; two bounds worked out (file size, Amdahl's law); and the challenge:
the smallest file of the course's VGG that is at least twice as fast as the original at batch 1 and loses
at most half a point of test accuracy."""
import math

import pandas as pd
from torch import nn
from torch.nn.utils import skip_init

from ..pipeline import choose_step, rank_for_budget
from . import Case, difference, exercise
from .challenges import define


def _whole_number(got, want):
    if isinstance(got, bool) or not isinstance(got, int):
        return f"returned {type(got).__name__} {got!r}, expected an int (low_rank takes a whole number)"
    return difference(got, want)


def _linear(n, m, bias=True):
    """Only its shape counts: skip_init draws no weights, so the notebook's random stream stays as it was."""
    return skip_init(nn.Linear, n, m, bias=bias)


# ---------------------------------------------------------------- 10.1: a rank for a parameter budget

@exercise("10.1", "the largest rank that fits a parameter budget", reference=rank_for_budget, compare=_whole_number,
          hint="Rank r costs r * (in + out) weights plus out biases (if the layer has a bias); take the largest whole "
               "r within the budget (//), at most min(in, out); raise ValueError if rank 1 does not fit.")
def _rank_cases():
    fc1 = _linear(1568, 256)  # the VGG's first Linear layer after half its channels are pruned
    return [Case("Linear(1568 -> 256) with a bias, a budget of 38,400 parameters", (fc1, 38_400)),
            Case("a budget of exactly 16 * (1568 + 256) + 256: rank 16 fits (at most, not below)",
                 (fc1, 16 * (1568 + 256) + 256)),
            Case("Linear(100 -> 50) without a bias: only weights count", (_linear(100, 50, bias=False), 1_000)),
            Case("a budget larger than the layer itself: the rank stops at min(in, out)", (_linear(60, 20), 10_000)),
            Case("a budget given as a float (a tenth of the layer's 401,664 parameters)", (fc1, 401_664 / 10)),
            Case("a budget below rank 1's cost", (fc1, 1_500), raises=ValueError),
            Case("an nn.Conv2d, not a Linear layer", (skip_init(nn.Conv2d, 4, 8, 3), 1_000), raises=TypeError)]


# ---------------------------------------------------------------- 10.2: the step that fits a budget

STEPS = ["original", "channels pruned", "low rank", "BN folded", "int8", "int8, TorchScript"]


def _table(accuracy, size_kb, latency_ms):
    """A made-up table like measure_steps's (the check must not depend on this machine's timings)."""
    return pd.DataFrame({"accuracy": accuracy, "params": [443_000, 115_000, 42_000, 41_600, 41_600, 41_600],
                         "size_bytes": [1000 * kb for kb in size_kb], "latency_b1_ms": latency_ms}, index=STEPS)


def _steps():
    # BN folding is exact: "BN folded" is exactly as accurate as "low rank", with a slightly smaller file
    return _table([0.915, 0.907, 0.902, 0.902, 0.899, 0.8985], [1_775, 462, 172, 168, 48, 56],
                  [1.05, 0.52, 0.48, 0.40, 0.55, 0.21])


@exercise("10.2", "the most accurate step within a size and latency budget", reference=choose_step,
          hint="Keep the rows with size_bytes <= max_bytes and latency_b1_ms <= max_ms; of those, the highest "
               "accuracy, then the smaller file, then the earlier row; ValueError if no row is left.")
def _choose_cases():
    steps = _steps()
    return [Case("six steps, a budget of 200 kB and 0.45 ms", (steps, 200_000, 0.45)),
            Case("a budget only the last step meets (60 kB, 0.3 ms)", (steps, 60_000, 0.3)),
            Case("a step exactly at the budget fits (48,000 bytes <= 48,000, 0.55 ms <= 0.55)", (steps, 48_000, 0.55)),
            Case("no latency limit (max_ms = math.inf), 500 kB", (steps, 500_000, math.inf)),
            Case("'BN folded' as accurate as 'low rank' (folding is exact), both within 200 kB and 0.5 ms: "
                 "the smaller file wins", (steps, 200_000, 0.5)),
            Case("a budget the original meets: no compression needed", (steps, 2_000_000, 2.0)),
            Case("a budget no step meets (40 kB)", (steps, 40_000, 1.0), raises=ValueError),
            Case("a table without the latency_b1_ms column", (steps.drop(columns="latency_b1_ms"), 200_000, 0.5),
                 raises=KeyError)]


# ---------------------------------------------------------------- worked out

exercise("10.3", "at most how many times smaller: 1/5 of the parameters kept, then fp32 -> int8",
         expected=lambda: 5 * (32 // 8),
         hint="Parameters kept times bytes per parameter: both ratios multiply.")
exercise("10.4", "the whole model's speed-up when 70% of its time runs 2x faster (Amdahl's law)",
         expected=lambda: 1 / ((1 - 0.7) + 0.7 / 2), rel_tol=1e-3,
         hint="The new time is the 30% left as it was plus 70% / 2; the speed-up is old time / new time.")


# ---------------------------------------------------------------- the challenge

def _measure(model):
    import torch

    from ..data import load_dataset
    from ..measure import model_size, time_models
    from ..train import evaluate, trained_small_vgg

    original = trained_small_vgg()
    test = load_dataset("fashion-mnist", train=False)
    x1 = torch.randn(1, 1, 28, 28)
    times = time_models({"yours": model, "original": original}, x1, repeat=100)  # one thread, interleaved
    accuracy, original_accuracy = evaluate(model, test), evaluate(original, test)
    speedup = times.loc["original", "latency_ms"] / times.loc["yours", "latency_ms"]
    return {"accuracy": accuracy, "points lost vs the original": 100 * (original_accuracy - accuracy),
            "x faster than the original, batch 1": speedup,
            "file_KB": model_size(model) / 1024, "x smaller file": model_size(original) / model_size(model)}


define("10", "the smallest file of the course's VGG that is at least 2x faster than the original at batch 1 "
       "(one thread, timed in the same run) and loses at most 0.5 point of test accuracy",
       _measure, targets={"points lost vs the original": ("<=", 0.5),
                          "x faster than the original, batch 1": (">=", 2.0)},
       score="file_KB", higher_is_better=False)
