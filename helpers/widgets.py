"""Builders for the notebooks' interactive panels (ipywidgets).

Each panel is split in two: a plain function that computes what the panel shows (unit tests call
it directly) and a builder that wires sliders to it and redraws a chart in an ``Output``.
Builders are named ``*_panel``: that is how the browser test finds the notebooks that have one.

* :func:`slider_panel` wraps any ``draw(**values) -> Figure`` in sliders (``ipywidgets.interactive``
  does the wiring); most lessons need nothing more.
* :func:`comparison_panel` measures a few models live (notebook 00).
"""
import inspect

import ipywidgets as W
import torch
from IPython.display import display

from .measure import compare
from .plots import compare_bars, show


def slider_panel(draw, **controls):
    """Sliders for the keyword arguments of ``draw``; the figure it returns is redrawn when one moves.

    ``controls`` are ipywidgets.interactive's abbreviations: ``(lo, hi)`` or ``(lo, hi, step)`` for a
    slider, a list for a choice of values (shown as a slider, so only those values can be picked),
    or a ready widget. As with ``ipywidgets.interact``, a default argument of ``draw`` is the
    starting value. Redraws happen when a slider is released, not while it is dragged.
    """
    if not callable(draw):
        raise TypeError("slider_panel(draw, ...): draw must be a function returning a matplotlib Figure")
    if not controls:
        raise ValueError("slider_panel needs at least one control, e.g. slider_panel(draw, k=[3, 5, 7])")
    defaults = {name: p.default for name, p in inspect.signature(draw).parameters.items()}
    for name, value in controls.items():
        start = defaults.get(name, inspect.Parameter.empty)
        if isinstance(value, list):  # a slider over exactly these values (ipywidgets would make a dropdown)
            controls[name] = W.SelectionSlider(options=value, value=start if start in value else value[0],
                                               description=name)
        elif not isinstance(value, W.Widget):
            controls[name] = W.interactive.widget_from_abbrev(value, start)
            controls[name].description = name
    panel = W.interactive(lambda **values: show(draw(**values)), **controls)
    for child in panel.children:
        if hasattr(child, "continuous_update"):
            child.continuous_update = False
    return panel


_BUILT = {}  # (name, builder) -> model: each model is built once per kernel, not at every redraw


def measure_models(builders, names, batch, image_size, *, in_channels=3, repeat=5):
    """The table the comparison panel draws: ``compare`` of the chosen models on one random batch.

    ``builders`` maps a name to a function that returns a model; each model is built once and kept.
    """
    if not names:
        raise ValueError("choose at least one model to measure")
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {list(builders)}")
    models = {}
    for name in names:
        key = (name, builders[name])
        if key not in _BUILT:
            _BUILT[key] = builders[name]().eval()
        models[name] = _BUILT[key]
    x = torch.randn(batch, in_channels, image_size, image_size, generator=torch.Generator().manual_seed(0))
    return compare(models, x, warmup=1, repeat=repeat)


def comparison_panel(builders, batches=(1, 2, 4, 8), image_sizes=(64, 128, 224), *, in_channels=3):
    """Tick models, pick a batch size and an image size: params, MACs, size and latency are redrawn.

    Latency is measured live on this machine (a few calls per model), so a redraw takes a moment.
    """
    boxes = [W.Checkbox(value=i < 2, description=name, indent=False) for i, name in enumerate(builders)]
    batch = W.SelectionSlider(options=list(batches), value=batches[0], description="batch")
    size = W.SelectionSlider(options=list(image_sizes), value=image_sizes[len(image_sizes) // 2],
                             description="image size")
    out = W.Output()

    def redraw(*_):
        names = [b.description for b in boxes if b.value]
        with out:
            out.clear_output(wait=True)
            if not names:
                print("Tick at least one model.")
                return
            print(f"measuring {', '.join(names)} at batch {batch.value}, {size.value}x{size.value} ...")
            table = measure_models(builders, names, batch.value, size.value, in_channels=in_channels)
            out.clear_output(wait=True)
            display(table.round(2))
            show(compare_bars(table))

    for control in (*boxes, batch, size):
        control.observe(redraw, names="value")
    redraw()
    return W.VBox([W.HBox(boxes), W.HBox([batch, size]), out])
