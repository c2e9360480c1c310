import ipywidgets as W
import pytest
import torch
from torch import nn

from helpers import compare, compare_bars, count_macs, layer_time_chart, layer_times
from helpers import plots as plots_module
from helpers import widgets as widgets_module
from helpers.widgets import comparison_panel, measure_models, slider_panel


def tiny(width):
    return lambda: nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


BUILDERS = {"narrow": tiny(2), "wide": tiny(16)}


def test_compare_bars_draws_one_panel_per_measure():
    table = compare({"a": nn.Linear(4, 4), "b": nn.Linear(4, 2)}, torch.randn(1, 4), warmup=1, repeat=3)
    fig = compare_bars(table)
    assert [ax.get_title() for ax in fig.axes] == ["parameters", "MACs per forward pass", "file size (MB)",
                                                  "median latency (ms)"]
    assert all(len(ax.patches) == 2 for ax in fig.axes)


def test_layer_time_chart_shows_the_non_tensor_share():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    breakdown = layer_times(net, torch.randn(1, 1, 8, 8), warmup=1, repeat=3)
    fig = layer_time_chart(breakdown)
    assert "non-tensor layers" in fig.axes[0].get_title()
    assert len(fig.axes[0].patches) == len(breakdown)


def test_show_displays_the_whole_figure_as_a_png(monkeypatch):
    shown = []
    monkeypatch.setattr(plots_module, "display", shown.append)
    table = compare({"a": nn.Linear(4, 4)}, torch.randn(1, 4), warmup=1, repeat=2)
    plots_module.show(compare_bars(table))
    assert len(shown) == 1 and shown[0].data.startswith(b"\x89PNG") and len(shown[0].data) > 10_000


def test_show_says_what_it_expects():
    with pytest.raises(TypeError, match="expects a matplotlib Figure"):
        plots_module.show(None)


def test_measure_models_measures_the_chosen_models():
    table = measure_models(BUILDERS, ["wide", "narrow"], batch=2, image_size=8, repeat=2)
    assert list(table.index) == ["wide", "narrow"]
    assert table.loc["wide", "MACs"] == count_macs(BUILDERS["wide"](), torch.randn(2, 3, 8, 8))
    assert table.loc["wide", "MACs"] > table.loc["narrow", "MACs"]


@pytest.mark.parametrize("names, match", [([], "at least one"), (["huge"], "unknown model")])
def test_measure_models_rejects_bad_choices(names, match):
    with pytest.raises(ValueError, match=match):
        measure_models(BUILDERS, names, batch=1, image_size=8)


def test_panel_redraws_when_a_control_moves(monkeypatch):
    calls = []
    real = widgets_module.measure_models
    monkeypatch.setattr(widgets_module, "measure_models", lambda *a, **k: calls.append(a[1:4]) or real(*a, **k))
    panel = comparison_panel(BUILDERS, batches=(1, 2), image_sizes=(8, 16))
    sliders = [w for w in panel.children[1].children if isinstance(w, W.SelectionSlider)]
    assert calls == [(["narrow", "wide"], 1, 16)]
    sliders[0].value = 2
    assert calls[-1] == (["narrow", "wide"], 2, 16)
    panel.children[0].children[1].value = False  # untick "wide"
    assert calls[-1] == (["narrow"], 2, 16)


def test_slider_panel_redraws_the_figure_on_each_move(monkeypatch):
    from matplotlib.figure import Figure

    calls, shown = [], []
    monkeypatch.setattr(plots_module, "display", shown.append)

    def draw(k, d):
        calls.append((k, d))
        fig = Figure()
        fig.subplots().plot([k, d])
        return fig

    panel = slider_panel(draw, k=[3, 5, 7], d=(1, 4))
    k, d = panel.children[:2]
    assert isinstance(k, W.SelectionSlider) and list(k.options) == [3, 5, 7]
    assert not k.continuous_update and not d.continuous_update
    k.value = 7
    assert calls[-1] == (7, d.value)
    assert shown and shown[-1].data.startswith(b"\x89PNG")


def test_slider_panel_starts_at_the_default_arguments_of_draw(monkeypatch):
    monkeypatch.setattr(plots_module, "display", lambda item: None)
    panel = slider_panel(lambda k=5, d=3: None, k=[3, 5, 7], d=(1, 4))
    assert [c.value for c in panel.children[:2]] == [5, 3]


def test_slider_panel_rejects_bad_arguments():
    with pytest.raises(TypeError, match="draw must be a function"):
        slider_panel("not a function", k=[1, 2])
    with pytest.raises(ValueError, match="at least one control"):
        slider_panel(lambda: None)
