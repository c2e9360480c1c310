"""helpers: the plumbing shared by the course's notebooks (measuring, data, training, charts, panels).

The notebooks teach each idea from scratch; helpers only does the chores they all need. Each
module is small enough to read in one sitting: measure, data, train, models, convs, shuffle, plots,
widgets, diagrams, exercises (the checks of the exercises, one module per notebook, and the
challenges), compress (the techniques as reusable functions, one module per lesson), pipeline
(notebook 10's chain of them), nas (notebook 11's search space and latency table), deploy (notebook
14's export and runtimes), reference (figures from the reference machine); classroom, assignments,
book and hub are for teachers (slides, nbgrader, the book, a class server).
"""
from .data import DatasetNotFoundError, load_dataset
from .convs import check_groups, valid_groups
from .env import DATA_DIR, FAST, device, set_seed, summary
from .exercises import check
from .measure import (Timing, benchmark, compare, count_flops, count_macs, count_params, layer_times, time_models,
                      model_size, num_threads, try_compile)
from .models import BLOCK_TYPES, RepVGGBlock, TreeBlock, small_net, small_vgg, tree_net
from .plots import compare_bars, layer_time_chart, show
from .train import cached_model, evaluate, fit, trained_small_vgg, trained_tree_net

__all__ = [
    "DATA_DIR", "FAST", "DatasetNotFoundError", "Timing", "benchmark", "cached_model", "check",
    "compare", "compare_bars", "count_flops", "count_macs", "count_params", "device", "evaluate",
    "fit", "layer_time_chart", "layer_times", "load_dataset", "model_size", "num_threads", "set_seed",
    "show", "small_vgg", "small_net", "tree_net", "RepVGGBlock", "TreeBlock", "time_models", "try_compile", "trained_small_vgg", "trained_tree_net", "BLOCK_TYPES", "summary", "check_groups", "valid_groups",
]
