"""The chart kinds the course draws again and again (matplotlib; each returns its Figure).

The figures are plain ``matplotlib.figure.Figure`` objects, not pyplot figures, and notebooks and
widget panels show them with :func:`show`, which renders the PNG itself. Keeping them out of
pyplot matters in panels: redrawn from a slider's callback in JupyterLab, pyplot figures sometimes
came out half drawn (seen with JupyterLab 4.6, ipykernel 7).

* :func:`compare_bars`: one bar chart per measure (params, MACs, size, latency) for a few models,
  from the table :func:`helpers.compare` returns.
* :func:`layer_time_chart`: where the time of one forward pass goes, per layer type, from
  :func:`helpers.layer_times`, with the tensor / non-tensor split.
"""
import io

from IPython.display import Image, display
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

TENSOR_COLOUR, NON_TENSOR_COLOUR = "tab:blue", "tab:orange"


def _human(x):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def compare_bars(table, title=None):
    """Bars of params, MACs, file size and median latency (with its spread) for each model."""
    panels = [("params", "parameters", None), ("MACs", "MACs per forward pass", None),
              ("size_MB", "file size (MB)", None), ("latency_ms", "median latency (ms)", "spread_ms")]
    fig = Figure(figsize=(3.2 * len(panels), 3.2))
    axes = fig.subplots(1, len(panels))
    names = [str(n) for n in table.index]
    for ax, (column, label, error) in zip(axes, panels):
        values = table[column]
        bars = ax.bar(names, values, yerr=table[error] / 2 if error else None,
                      color=[f"C{i}" for i in range(len(names))], capsize=4)
        ax.bar_label(bars, labels=[_human(v) for v in values], fontsize=8)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _human(v)))
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.margins(y=0.2)
    threads, batch = table.attrs.get("threads"), table.attrs.get("batch")
    subtitle = f"batch {batch}, {threads} thread(s); latency bars show median ± half the IQR" if threads else ""
    fig.suptitle(" · ".join(t for t in (title, subtitle) if t), fontsize=10)
    fig.tight_layout()
    return fig


def layer_time_chart(breakdown, title="Where one forward pass spends its time"):
    """Horizontal bars of milliseconds per layer type, coloured tensor (conv, linear) vs non-tensor."""
    table = breakdown.sort_values("ms")
    fig = Figure(figsize=(6.5, 3))
    ax = fig.subplots()
    colours = [TENSOR_COLOUR if work == "tensor" else NON_TENSOR_COLOUR for work in table["work"]]
    bars = ax.barh(table.index, table["ms"], color=colours)
    ax.bar_label(bars, labels=[f"{share:.0%}" for share in table["share"]], fontsize=8, padding=2)
    ax.set_xlabel("median milliseconds per forward pass")
    non_tensor = breakdown.loc[breakdown["work"] == "non-tensor", "share"].sum()
    ax.set_title(f"{title}\nnon-tensor layers: {non_tensor:.0%} of the time", fontsize=10)
    ax.legend(handles=[Rectangle((0, 0), 1, 1, color=TENSOR_COLOUR),
                       Rectangle((0, 0), 1, 1, color=NON_TENSOR_COLOUR)],
              labels=["tensor (conv, linear)", "non-tensor"], fontsize=8, loc="lower right")
    ax.margins(x=0.15)
    fig.tight_layout()
    return fig


def show(fig):
    """Display ``fig`` in a notebook or panel as a PNG rendered here, in full (see the module docstring)."""
    if not isinstance(fig, Figure):
        raise TypeError(f"show expects a matplotlib Figure (a chart function or a panel's draw must return one), "
                        f"got {type(fig).__name__}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    display(Image(buffer.getvalue()))
