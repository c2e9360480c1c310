"""The end-to-end compression pipeline of notebook 10, and ``make bench`` (``python -m helpers.pipeline``).

Each model goes through the recipe its source applied to it, each step from :mod:`helpers.compress`,
fine-tuning after every step that changes the function (distilling from the original model, whose
logits are computed once):

* VGG-like net: channel pruning (:func:`~helpers.compress.prune_channels`) -> low rank of the first
  fully connected layer (:func:`~helpers.compress.low_rank`) -> BatchNorm folded
  (:func:`~helpers.compress.fuse_bn`) -> int8 (:func:`~helpers.compress.quantize`);
* tree net: its tree blocks merged into single convolutions (:func:`~helpers.compress.merge_tree_blocks`)
  one block at a time, fine-tuned after each block before the next is fitted -> channel pruning ->
  BatchNorm folded -> int8 (no low rank: the source's tree recipe has none);
* both: the int8 model frozen by TorchScript (:func:`~helpers.compress.freeze`), the form one would
  deploy, with no Python between layers.

:func:`measure_steps` then measures every step, and two fp32 baselines, in one interleaved run;
:func:`measure_deployed` deploys the compressed net (notebook 14: ONNX Runtime and OpenVINO, fp32 and int8, and
a 4-bit file) and ``make bench`` records the best runtime's row beside the TorchScript int8 row;
:func:`choose_step` picks the step that meets a size and latency budget, and :func:`rank_for_budget`
the low rank that fits a parameter budget (notebook 10's exercises).
"""
import argparse
import json
import os
import time

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Subset

from . import compress
from .env import DATA_DIR, FAST, atomic_file, set_seed, summary
from .measure import count_macs, count_params, model_size, time_models
from .models import TreeBlock
from .train import evaluate, trained_small_vgg, trained_tree_net

RESULTS = DATA_DIR / "results"

# What the source reports against its original models, on MNIST (speed-up at batch 1 on a CPU).
SOURCE = {
    "vgg": {"accuracy": 0.9731, "speed-up": 1.46, "smaller file": 52.4, "fewer params": 3.08},
    "tree": {"accuracy": 0.983, "speed-up": 2.375, "smaller file": 4.72, "fewer params": 3.51},
}
# The source's file sizes for its VGG-like net (in KB) and that net's parameter count (notebook 10 checks
# the 52.4x against them), and its second table: VGG16 on a flowers dataset, with its remark on int8.
SOURCE_VGG_FILES = {"params": 440_930, "original KB": 1731.46, "compressed KB": 32.64}
SOURCE_VGG16_FLOWERS = {"smaller file": 23.8, "speed-up": 3.5, "int8 speed-up": (2, 3)}

# How hard each step compresses, and how many epochs of fine-tuning follow it (full mode; fast mode: 1).
# "merged" is per tree block; a plan without "rank" has no low-rank step.
PLANS = {
    "vgg": {"prune": 0.5, "rank": 16, "epochs": {"pruned": 2, "low rank": 1}},
    "tree": {"prune": 0.5, "epochs": {"merged": 1, "pruned": 2}},
}
MODELS = {"vgg": trained_small_vgg, "tree": trained_tree_net}
CODEBOOK_EPOCHS = 1  # fine-tuning of the 4-bit file's shared values (both modes)


def compress_steps(name, original, train_data, *, plan=None, fast=FAST, progress=False):
    """The model after each step of the pipeline, as ``{step: model}`` (the first is ``original``).

    ``name`` is "vgg" or "tree" (the tree net's blocks are merged first, one at a time); ``plan``
    overrides :data:`PLANS`. Fine-tuning distils from ``original`` (T = 4, alpha = 0.5) on ``train_data``.
    """
    if name not in PLANS:
        raise ValueError(f"unknown model {name!r}; choose one of {list(PLANS)}")
    plan = plan or PLANS[name]
    logits = compress.teacher_logits(original, train_data)

    def tuned(model, step):
        epochs = 1 if fast else plan["epochs"][step]
        compress.distill(model, logits, train_data, T=4.0, alpha=0.5, epochs=epochs, seed=0, progress=progress)
        return model  # distill trains it in place and gives it back where it was, in eval mode

    steps = {"original": original}
    model = original
    if name == "tree":  # block by block: the next block is fitted to what the fine-tuned blocks before it compute
        while any(isinstance(layer, TreeBlock) for layer in model):
            merged = compress.merge_tree_blocks(model, train_data, count=1)
            model = steps[f"block {len(steps)} merged"] = tuned(merged, "merged")
    model = steps["channels pruned"] = tuned(compress.prune_channels(model, plan["prune"]), "pruned")
    if plan.get("rank"):
        first_linear = next(n for n, m in model.named_modules() if isinstance(m, nn.Linear))
        model = steps["low rank"] = tuned(compress.low_rank(model, plan["rank"], layers=[first_linear]), "low rank")
    model = steps["BN folded"] = compress.fuse_bn(model)
    int8 = steps["int8"] = compress.quantize(model, train_data)
    steps["int8, TorchScript"] = compress.freeze(int8, train_data[0][0][None])
    return steps


def measure_steps(steps, test_data, *, repeat=30, threads=1):
    """One row per step: accuracy, params, MACs, file size, batch-1 latency, batch-64 throughput (with
    the spread, the inter-quartile range, of the timed calls), and each as a ratio to the original
    (``x`` columns: how many times better).

    Two fp32 baselines are timed with the steps: "original" (as trained) and "tuned fp32": the
    original with BN folded, in ``channels_last`` layout, frozen by TorchScript (the fastest fp32
    form of the same function we found at batch 1). Params and MACs of the int8 steps are those of
    the fp32 model they were made from (the same arithmetic, on int8 numbers). All models are timed
    interleaved in one run with ``threads`` threads; ratios are what to compare, not absolute times.
    """
    steps = dict(steps)
    fp32 = {step: model for step, model in steps.items() if not step.startswith("int8")}
    last_fp32 = list(fp32.values())[-1]
    x1, x64 = torch.randn(1, 1, 28, 28), torch.randn(64, 1, 28, 28)
    tuned = compress.freeze(compress.fuse_bn(steps["original"]), x1, channels_last=True)
    timed = {**steps, "tuned fp32": tuned}
    batch1 = time_models(timed, x1, threads=threads, repeat=repeat)
    batch64 = time_models(timed, x64, threads=threads, repeat=max(5, repeat // 3))
    rows = {}
    for step, model in steps.items():
        counted = fp32.get(step, last_fp32)
        rows[step] = {"accuracy": evaluate(model, test_data), "params": count_params(counted),
                      "MACs": count_macs(counted, x1), "size_bytes": model_size(model),
                      "latency_b1_ms": batch1.loc[step, "latency_ms"], "spread_b1_ms": batch1.loc[step, "spread_ms"],
                      "images_per_s_b64": 64e3 / batch64.loc[step, "latency_ms"],
                      "spread_b64_ms": batch64.loc[step, "spread_ms"]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    first = table.iloc[0]
    table["accuracy_change"] = table["accuracy"] - first["accuracy"]
    table["x fewer params"] = first["params"] / table["params"]
    table["x fewer MACs"] = first["MACs"] / table["MACs"]
    table["x smaller file"] = first["size_bytes"] / table["size_bytes"]
    table["x faster b1"] = first["latency_b1_ms"] / table["latency_b1_ms"]
    table["x faster b1 vs tuned fp32"] = batch1.loc["tuned fp32", "latency_ms"] / table["latency_b1_ms"]
    table["x throughput b64"] = table["images_per_s_b64"] / first["images_per_s_b64"]
    table.attrs["tuned fp32 speed-up b1"] = batch1.loc["original", "latency_ms"] / batch1.loc["tuned fp32", "latency_ms"]
    table.attrs["threads"] = threads
    return table


def rank_for_budget(linear, max_params):
    """The largest rank ``r`` (at most ``min(in_features, out_features)``) at which ``linear``, factorised
    as :func:`~helpers.compress.low_rank` does it, has at most ``max_params`` parameters.

    ``low_rank`` turns ``Linear(n -> m)`` into ``Linear(n -> r)`` without a bias and ``Linear(r -> m)``
    with the original bias: ``r (n + m)`` weights, plus ``m`` biases when the layer has them. A rank
    above ``min(n, m)`` is not a factorisation, so a generous budget gives ``min(n, m)``. Raises
    TypeError unless ``linear`` is an ``nn.Linear``, and ValueError when even rank 1 does not fit.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"rank_for_budget factorises an nn.Linear, got {type(linear).__name__}")
    n, m = linear.in_features, linear.out_features
    biases = m if linear.bias is not None else 0
    if max_params < (n + m) + biases:
        raise ValueError(f"a budget of {max_params} parameters is below rank 1's {(n + m) + biases} "
                         f"({n} + {m} weights{f' + {m} biases' if biases else ''})")
    return min(int((max_params - biases) // (n + m)), n, m)


def choose_step(table, max_bytes, max_ms):
    """The step to deploy, from a table like :func:`measure_steps`'s (one row per step, in pipeline order):
    the name of the most accurate step whose file is at most ``max_bytes`` (``size_bytes``) and whose
    batch-1 latency at most ``max_ms`` (``latency_b1_ms``). Of equally accurate steps, the one with the
    smaller file; then the earlier one. Raises KeyError when a column is missing, ValueError when no
    step fits the budget.
    """
    missing = [c for c in ("accuracy", "size_bytes", "latency_b1_ms") if c not in table.columns]
    if missing:
        raise KeyError(f"the table needs the columns accuracy, size_bytes and latency_b1_ms; {missing} missing")
    fits = [(-row["accuracy"], row["size_bytes"], i, step) for i, (step, row) in enumerate(table.iterrows())
            if row["size_bytes"] <= max_bytes and row["latency_b1_ms"] <= max_ms]
    if not fits:
        raise ValueError(f"no step has a file of at most {max_bytes:,.0f} bytes and a batch-1 latency of at most "
                         f"{max_ms:.3g} ms")
    return min(fits)[-1]


def source_comparison(tables):
    """The source's table and ours side by side: ``tables`` maps "vgg"/"tree" to :func:`measure_steps` tables."""
    rows = {}
    for name, table in tables.items():
        ours = table.iloc[-1]
        rows[f"{name}, source (MNIST)"] = SOURCE[name]
        rows[f"{name}, ours (Fashion-MNIST)"] = {"accuracy": ours["accuracy"], "speed-up": ours["x faster b1"],
                                                  "smaller file": ours["x smaller file"],
                                                  "fewer params": ours["x fewer params"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def _write(path, text):
    """Write ``text`` atomically; a previous file is kept beside it as ``*.previous``."""
    if path.exists():
        os.replace(path, path.with_name(path.name + ".previous"))
    with atomic_file(path, "w") as file:
        file.write(text)


def markdown(tables):
    """The benchmark as Markdown: one table per model, and the comparison with the source."""
    columns = ["accuracy", "accuracy_change", "params", "x fewer params", "MACs", "size_bytes", "x smaller file",
               "latency_b1_ms", "x faster b1", "x faster b1 vs tuned fp32", "images_per_s_b64", "x throughput b64"]
    parts = []
    for name, table in tables.items():
        took = f"; compressed and measured in {table.attrs['minutes']:.1f} min" if "minutes" in table.attrs else ""
        parts.append(f"### {name}\n\n{table[columns].round(4).to_markdown()}\n\n"
                     f"tuned fp32 (BN folded, channels_last, TorchScript) vs original at batch 1: "
                     f"{table.attrs['tuned fp32 speed-up b1']:.2f}x; {table.attrs['threads']} thread(s){took}")
    parts.append(f"### against the source\n\n{source_comparison(tables).round(4).to_markdown()}")
    return "\n\n".join(parts) + "\n"


def run(names=("vgg", "tree"), *, repeat=30, out=RESULTS):
    """The whole benchmark: every step of every model, measured; writes ``pipeline.json`` and ``pipeline.md``."""
    from .data import load_dataset

    set_seed(0)
    train_data, test_data = load_dataset("fashion-mnist"), load_dataset("fashion-mnist", train=False)
    if FAST:
        train_data, test_data = Subset(train_data, range(1000)), Subset(test_data, range(500))
    tables, deployed = {}, {}
    for name in names:
        model = MODELS[name]()  # trained on the first call (not counted in the minutes below)
        start = time.perf_counter()
        print(f"{name}: compressing ...", flush=True)
        steps = compress_steps(name, model, train_data, progress=True)
        print(f"{name}: measuring ...", flush=True)
        tables[name] = measure_steps(steps, test_data, repeat=repeat)
        tables[name].attrs["minutes"] = (time.perf_counter() - start) / 60
        print(f"{name}: deploying ...", flush=True)
        deployed[name] = measure_deployed(name, steps, train_data, test_data, repeat=repeat, out=out)
    record = {"machine": summary(), "plans": {n: PLANS[n] for n in names},
              "models": {n: {"steps": t.to_dict(orient="index"), **t.attrs, "deployed": deployed[n]}
                         for n, t in tables.items()},
              "source": SOURCE}
    _write(out / "pipeline.json", json.dumps(record, indent=1))
    _write(out / "pipeline.md", f"machine: {summary()}\n\n" + markdown(tables) + deployed_markdown(deployed))
    return tables


def measure_deployed(name, steps, train_data, test_data, *, repeat=30, threads=1, out=RESULTS):
    """The compressed net deployed (notebook 14): its "BN folded" step exported to ONNX and run by each
    runtime of :func:`helpers.deploy.runtime_forms`, timed with the "int8, TorchScript" step in one run.

    Returns ``{"TorchScript int8": row, "best runtime": row, "4-bit file": row, ...}``: the best runtime is
    the fastest form at batch 1 among those within 0.2 point of the fp32 model's accuracy; the 4-bit file
    (:func:`helpers.deploy.save_packed`: 4-bit shared values with a factor per row, fine-tuned by distillation
    for :data:`CODEBOOK_EPOCHS` epoch(s) as Deep Compression trains them) is written to ``out/deployed/``,
    loaded back and evaluated, with its accuracy before that fine-tuning beside it. The
    compressed fp32 net is also kept for notebook 14 (:func:`helpers.deploy.keep_compressed`).
    """
    from . import deploy

    folder = out / "deployed"
    model, frozen = steps["BN folded"], steps["int8, TorchScript"]
    deploy.keep_compressed(name, model)
    onnx_path = deploy.export_onnx(model, folder / f"{name}.onnx", test_data[0][0][None])
    forms = {"TorchScript int8": frozen, **deploy.runtime_forms(onnx_path, train_data, threads=threads)}
    table = deploy.deploy_table(forms, model, test_data, repeat=repeat, threads=threads)
    fp32_accuracy = evaluate(model, test_data)
    runtimes = table.drop(index="TorchScript int8")
    close = runtimes[(runtimes["accuracy"] - fp32_accuracy).abs() <= 0.002]
    best = (close if len(close) else runtimes)["latency_b1_ms"].idxmin()
    original = steps["original"]
    packed = folder / f"{name}_4bit.cmpk"
    deploy.save_packed(model, packed)  # k-means only, first
    untuned_accuracy = evaluate(deploy.load_packed(packed), test_data)
    shared = deploy.share_weights(model)  # then the shared values trained, as the other steps: distilled
    compress.distill(shared, compress.teacher_logits(original, train_data), train_data, T=4.0, alpha=0.5,
                     epochs=CODEBOOK_EPOCHS, seed=0, progress=False)
    deploy.save_packed(shared, packed)
    reloaded = deploy.load_packed(packed)
    row = lambda label: {"form": label, **table.loc[label].to_dict()}  # noqa: E731
    return {"fp32 accuracy": fp32_accuracy, "TorchScript int8": row("TorchScript int8"), "best runtime": row(best),
            "x faster b1, best runtime vs TorchScript int8":
                table.loc["TorchScript int8", "latency_b1_ms"] / table.loc[best, "latency_b1_ms"],
            "4-bit file": {"size_bytes": packed.stat().st_size, "accuracy": evaluate(reloaded, test_data),
                           "accuracy before fine-tuning the shared values": untuned_accuracy,
                           "original accuracy": evaluate(original, test_data),
                           "x smaller than the original": model_size(original) / packed.stat().st_size},
            "threads": threads, "all forms": table.to_dict(orient="index")}


def deployed_markdown(deployed):
    """The deployed forms of :func:`measure_deployed` as Markdown: per model, every runtime's row."""
    parts = []
    for name, found in deployed.items():
        table = pd.DataFrame.from_dict(found["all forms"], orient="index")
        packed = found["4-bit file"]
        parts.append(f"### {name}, deployed ({found['threads']} thread(s))\n\n{table.round(4).to_markdown()}\n\n"
                     f"best runtime at batch 1: {found['best runtime']['form']}, "
                     f"{found['x faster b1, best runtime vs TorchScript int8']:.2f}x the TorchScript int8's speed; "
                     f"4-bit file: {packed['size_bytes']:,} bytes, {packed['x smaller than the original']:.1f}x smaller "
                     f"than the original, accuracy {packed['accuracy']:.4f} (before fine-tuning the shared values "
                     f"{packed['accuracy before fine-tuning the shared values']:.4f}; original "
                     f"{packed['original accuracy']:.4f})")
    return "\n\n" + "\n\n".join(parts) + "\n" if parts else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the compression pipeline on the course's models and measure it.")
    parser.add_argument("models", nargs="*", help=f"which of {', '.join(PLANS)} (default: all)")
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per model and batch size (default 30)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.models if name not in PLANS]
    if unknown:  # checked here: argparse's `choices` refuses an empty list on Python 3.11
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(PLANS)}")
    print(summary())
    tables = run(args.models or list(PLANS), repeat=args.repeat)
    print(markdown(tables))
    print(f"written: {RESULTS / 'pipeline.json'} and {RESULTS / 'pipeline.md'}")


if __name__ == "__main__":
    main()
