import math
import random

import pytest
import torch

from helpers import count_params, nas, small_net
from helpers.nas import SEARCH_SPACE, Layer, Stage

X = torch.randn(2, 1, 28, 28)


def test_space_size_is_the_product_of_the_choices():
    assert nas.space_size() == (4 * 4 * 2 * 4) ** 2 == 16_384


def test_sampled_networks_are_in_the_space_build_and_classify():
    rng = random.Random(0)
    for _ in range(20):
        arch = nas.sample_arch(rng)
        assert nas.check_arch(arch) == arch
        net = nas.build(arch).eval()
        assert net(X).shape == (2, 10)
        assert len(net) == len(nas.layers(arch)) == 2 + sum(stage.depth for stage in arch)


def test_sampling_is_repeatable_and_covers_every_option():
    draws = [nas.sample_arch(random.Random(3)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(0)
    seen = {field: set() for field in Stage._fields}
    for _ in range(300):
        for stage in nas.sample_arch(rng):
            for field, value in stage._asdict().items():
                seen[field].add(value)
    assert {field: set(options) for field, options in SEARCH_SPACE.items()} == seen


def test_layers_follow_the_stages():
    arch = (Stage("plain", 2, 3, 1.0), Stage("mobilenet_v2", 3, 5, 0.5))
    got = nas.layers(arch)
    assert got[0] == Layer("stem", 1, 16, 1, 3, 28)
    assert got[1:3] == [Layer("plain", 16, 32, 2, 3, 28), Layer("plain", 32, 32, 1, 3, 14)]
    assert got[3:6] == [Layer("mobilenet_v2", 32, 32, 2, 5, 14)] + [Layer("mobilenet_v2", 32, 32, 1, 5, 7)] * 2
    assert got[-1] == Layer("head", 32, 10, 1, 1, 7)
    # a plain block with width 1 is one 3x3 conv 32->32 and its BN
    assert count_params(nas.make_layer(got[2])) == 32 * 32 * 9 + 2 * 32


@pytest.mark.parametrize("block", ["plain", "resnet", "mobilenet_v2"])
def test_notebook_04s_nets_are_points_of_the_space(block):
    ours, theirs = nas.build((Stage(block, 2, 3, 1.0),) * 2), small_net(block)
    assert count_params(ours) == count_params(theirs)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]


def test_blocks_use_the_chosen_kernel_and_keep_the_shape_rules():
    for kind in SEARCH_SPACE["block"]:
        for kernel in (3, 5):
            block = nas.search_block(kind, 16, 32, 2, kernel)
            assert block(torch.randn(1, 16, 14, 14)).shape == (1, 32, 7, 7)
            sizes = {m.kernel_size for m in block.modules() if isinstance(m, torch.nn.Conv2d)}
            assert (kernel, kernel) in sizes
    with pytest.raises(ValueError, match="choose one of"):
        nas.search_block("vgg", 16, 16, 1, 3)


def test_mutate_changes_exactly_one_choice():
    rng = random.Random(1)
    for _ in range(50):
        parent = nas.sample_arch(rng)
        child = nas.mutate(parent, rng)
        nas.check_arch(child)
        changes = [(a, b) for p, c in zip(parent, child) for a, b in zip(p, c) if a != b]
        assert len(changes) == 1


@pytest.mark.parametrize("arch, message", [
    ("plain", "tuple of 2"),
    ((Stage("plain", 1, 3, 1.0),) * 3, "tuple of 2"),
    ((Stage("plain", 5, 3, 1.0),) * 2, "depth=5"),
    ((Stage("plain", 1, 7, 1.0),) * 2, "kernel=7"),
    ((Stage("dense", 1, 3, 1.0),) * 2, "block='dense'"),
    ((Stage("plain", True, 3, 1.0),) * 2, "depth=True"),
    (("plain", "resnet"), "must be a Stage"),
])
def test_bad_architectures_get_a_clear_error(arch, message):
    with pytest.raises(ValueError, match=message):
        nas.build(arch)


def test_all_layers_covers_every_network():
    every = set(nas.all_layers())
    assert len(every) == len(nas.all_layers())  # no repeats
    rng = random.Random(2)
    for _ in range(200):
        assert set(nas.layers(nas.sample_arch(rng))) <= every


class FakeTable(nas.LatencyTable):
    """A table whose 'measurements' are MACs, so that tests do not depend on the machine's speed."""

    def fill(self, layer_list):
        for layer in layer_list:
            self.ms.setdefault(layer, layer.c_in * layer.c_out * layer.kernel ** 2 * layer.size ** 2 / 1e6)
        return self


def test_the_table_predicts_the_sum_of_its_layers():
    table = nas.LatencyTable(repeat=2)
    arch = nas.sample_arch(random.Random(0))
    predicted = table.predict(arch)
    assert len(table) == len(set(nas.layers(arch)))
    assert predicted == pytest.approx(sum(table.ms[layer] for layer in nas.layers(arch)))
    assert all(ms > 0 for ms in table.ms.values())
    frame = table.to_frame()
    assert list(frame.columns) == list(Layer._fields) + ["ms"] and len(frame) == len(table)


def test_the_table_ranks_small_and_large_networks_like_a_stopwatch():
    table = nas.LatencyTable(repeat=5)
    small = (Stage("plain", 1, 3, 0.5),) * 2
    large = (Stage("resnet", 4, 5, 2.0),) * 2
    assert table.predict(small) * 3 < table.predict(large)


def test_within_budget_keeps_proposing_and_says_when_nothing_fits():
    table, rng = FakeTable(), random.Random(0)
    fastest = nas.fastest_arch(table)
    assert all(stage.depth == 1 and stage.kernel == 3 and stage.width == 0.5 for stage in fastest)
    budget = table.predict(fastest) * 3
    for _ in range(10):
        assert table.predict(nas.within_budget(lambda: nas.sample_arch(rng), table, budget)) <= budget
    with pytest.raises(ValueError, match="fastest network of the space is predicted at"):
        nas.within_budget(lambda: nas.sample_arch(rng), table, table.predict(fastest) / 2, tries=50)
    for bad in (0, -1.0, "1 ms", True):
        with pytest.raises(ValueError, match="budget_ms must be"):
            nas.within_budget(lambda: nas.sample_arch(rng), table, bad)


def test_pareto_front():
    points = [(1.0, 0.80), (2.0, 0.85), (1.5, 0.79), (3.0, 0.85), (0.5, 0.60), (2.5, 0.90), (1.0, 0.75)]
    assert nas.pareto_front(points) == [4, 0, 1, 5]
    assert nas.pareto_front([]) == []
    front = nas.pareto_front(points)
    for i, (lat, acc) in enumerate(points):  # nothing off the front beats a front point on both
        if i not in front:
            assert any(points[j][0] <= lat and points[j][1] >= acc for j in front)
    assert math.isclose(max(points[i][1] for i in front), max(acc for _, acc in points))


def test_pareto_front_keeps_identical_points_and_refuses_bad_ones():
    assert nas.pareto_front([(1.0, 0.9), (1.0, 0.9), (2.0, 0.9)]) == [0, 1]  # neither copy dominates the other
    with pytest.raises(ValueError, match="pairs"):
        nas.pareto_front([(1.0, 0.9, 3)])


def test_predict_latency_sums_the_table_and_names_a_missing_layer():
    arch = nas.sample_arch(random.Random(0))
    ms = {layer: 0.5 for layer in nas.all_layers()}
    assert nas.predict_latency(arch, ms) == 0.5 * len(nas.layers(arch))
    del ms[nas.layers(arch)[1]]
    with pytest.raises(KeyError, match="no time for"):
        nas.predict_latency(arch, ms)


def test_an_evolution_step_mutates_the_best_of_a_sample_and_the_oldest_dies():
    alive = [3, 9, 1, 7]
    child, after = nas.evolution_step(alive, score=lambda a: a, rng=random.Random(0), sample=4,
                                      mutate=lambda parent, rng: parent * 10)
    assert child == 90 and after == [9, 1, 7, 90] and alive == [3, 9, 1, 7]
    with pytest.raises(ValueError, match="sample"):
        nas.evolution_step(alive, score=lambda a: a, rng=random.Random(0), sample=5, mutate=lambda p, r: p)
