"""Every diagram the notebooks draw, drawn here from the same kind of module, and the labels read from it."""
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn
from torchvision.models import mobilenetv2, resnet, shufflenetv2, squeezenet
from torchvision.ops import SqueezeExcitation

from helpers import diagrams
from helpers.compress import fuse_bn, reparameterize
from helpers.diagrams import (block_diagram, describe, grouped_conv_diagram, merge_diagram, pipeline_diagram,
                              shuffle_diagram)
from helpers.models import RepVGGBlock, TreeBlock


def texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def conv_bn(c_in, c_out, k=1, groups=1, stride=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out))


class ShuffleV1Unit(nn.Module):  # as notebook 03 writes it: the shuffle is a plain function
    def __init__(self, c, groups):
        super().__init__()
        self.groups = groups
        self.squeeze, self.depthwise, self.expand = conv_bn(c, c // 4, 1, groups), conv_bn(c // 4, c // 4, 3, c // 4), conv_bn(c // 4, c, 1, groups)

    def forward(self, x):
        y = shufflenetv2.channel_shuffle(torch.relu(self.squeeze(x)), self.groups)
        return torch.relu(x + self.expand(self.depthwise(y)))


class DarkNetResidual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.reduce, self.conv = conv_bn(c, c // 2, 1), conv_bn(c // 2, c, 3)

    def forward(self, x):
        return x + nn.functional.leaky_relu(self.conv(nn.functional.leaky_relu(self.reduce(x), 0.1)), 0.1)


class DataDependent(nn.Module):  # control flow that depends on the data: no graph can hold it
    def forward(self, x):
        return x if x.sum() > 0 else -x


SHAPE = (1, 64, 14, 14)
BLOCKS = {  # the blocks of notebooks 02-04, as torchvision or the notebooks build them
    "separable": (nn.Sequential(conv_bn(64, 64, 3, 64), nn.ReLU(), conv_bn(64, 128), nn.ReLU()), {}),
    "bottleneck": (resnet.Bottleneck(64, 16), {}),
    "resnext": (resnet.Bottleneck(64, 16, groups=8, base_width=8), {}),
    "mobilenet v2": (mobilenetv2.InvertedResidual(64, 64, 1, 6), {}),
    "mobilenet v2 stride 2": (mobilenetv2.InvertedResidual(64, 96, 2, 6), {}),
    "shufflenet v1": (ShuffleV1Unit(64, 4), {"wrap": [shufflenetv2.channel_shuffle]}),
    "shufflenet v2": (shufflenetv2.InvertedResidual(64, 64, 1), {"wrap": [shufflenetv2.channel_shuffle]}),
    "shufflenet v2 stride 2": (shufflenetv2.InvertedResidual(64, 128, 2), {"wrap": [shufflenetv2.channel_shuffle]}),
    "fire": (squeezenet.Fire(64, 8, 32, 32), {}),
    "se": (SqueezeExcitation(64, 4), {}),
    "darknet": (DarkNetResidual(64), {}),
    "factorised": (nn.Sequential(nn.Conv2d(64, 64, (1, 3), padding=(0, 1)), nn.Conv2d(64, 64, (3, 1), padding=(1, 0))), {}),
    "tree": (TreeBlock(64, 16, 16, 8, 16, 8), {}),
}


@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_of_the_course_is_drawn(name):
    module, options = BLOCKS[name]
    fig = block_diagram(module, SHAPE, **options)
    assert isinstance(fig, Figure)
    labels = texts(fig)
    assert labels[0].startswith("input 64×14×14") and any(t.startswith("output") for t in labels)
    fig.savefig(__import__("io").BytesIO(), format="png")  # it really renders


def test_labels_come_from_the_module():
    labels = texts(block_diagram(resnet.Bottleneck(64, 16, groups=8, base_width=8), SHAPE))
    assert "3×3 conv 16→16, g=8 + BN + ReLU" in labels
    assert "add, then ReLU → 64×14×14" in labels and "identity" in labels
    labels = texts(block_diagram(shufflenetv2.InvertedResidual(64, 128, 2), SHAPE, wrap=[shufflenetv2.channel_shuffle]))
    assert "3×3 depthwise conv 64→64, stride 2 + BN" in labels and "channel shuffle, g=2" in labels
    assert "output 128×7×7" in labels and "identity" not in labels  # the stride-2 unit has no identity path
    assert "split in 2" in texts(block_diagram(shufflenetv2.InvertedResidual(64, 64, 1), SHAPE,
                                               wrap=[shufflenetv2.channel_shuffle]))
    se = texts(block_diagram(SqueezeExcitation(64, 4), SHAPE))
    assert "global avg pool" in se and any(t.startswith("multiply") for t in se)


def test_a_changed_block_draws_differently():
    with_identity = texts(block_diagram(RepVGGBlock(16, 16), (1, 16, 8, 8)))
    without = texts(block_diagram(RepVGGBlock(16, 32), (1, 16, 8, 8)))
    assert "BN" in with_identity and "BN" not in without and len(with_identity) > len(without)


def test_describe_reads_kernel_channels_groups_stride():
    assert describe(nn.Conv2d(8, 16, 3, stride=2, groups=4)) == ("conv", "3×3 conv 8→16, g=4, stride 2")
    assert describe(nn.Conv2d(8, 8, 5, groups=8, dilation=2)) == ("depthwise", "5×5 depthwise conv 8→8, dilation 2")
    assert describe(nn.Linear(10, 3)) == ("linear", "Linear 10→3")
    assert describe(nn.AvgPool2d(3, 1, 1)) == ("pool", "3×3 avg pool")
    assert describe(nn.ChannelShuffle(3)) == ("shuffle", "channel shuffle, g=3")


def test_merges_and_folding_are_drawn_before_and_after():
    block = RepVGGBlock(16, 16).eval()
    fig = merge_diagram(block, reparameterize(nn.Sequential(block)), (1, 16, 8, 8))
    assert len(fig.axes) == 2 and "3×3 conv 16→16 + ReLU" in texts(fig)
    conv_bn_pair = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)).eval()
    folded = texts(merge_diagram(conv_bn_pair, fuse_bn(conv_bn_pair), (1, 8, 8, 8)))
    assert "3×3 conv 8→8 + BN" in folded and "3×3 conv 8→8" in folded
    grouped = texts(grouped_conv_diagram(nn.Conv2d(8, 16, 3, padding=1, groups=4), (1, 8, 8, 8)))
    assert grouped.count("3×3 conv 2→4") == 4 and "split in 4" in grouped and "concat → 16×8×8" in grouped


def test_shuffle_diagram_follows_nn_channel_shuffle():
    fig = shuffle_diagram(6, 2)
    after = [int(t) for t in texts(fig) if t.isdigit()][6:]
    assert after == [0, 3, 1, 4, 2, 5]


def test_pipeline_diagram_writes_the_ratios_under_each_step():
    fig = pipeline_diagram(["original", "pruned"], {"pruned": {"x smaller file": 2.0, "x faster": 1.25}})
    assert "x smaller file 2.00\nx faster 1.25" in texts(fig)


def test_bad_input_gets_a_clear_error():
    with pytest.raises(TypeError, match="nn.Module"):
        block_diagram("conv", SHAPE)
    with pytest.raises(ValueError, match="input_shape"):
        block_diagram(nn.Conv2d(3, 3, 1), (1, 0, 4, 4))
    with pytest.raises(ValueError, match="more than"):
        block_diagram(resnet.resnet50(), (1, 3, 32, 32))
    with pytest.raises(ValueError, match="could not trace"):
        block_diagram(DataDependent(), SHAPE)
    with pytest.raises(TypeError, match="nn.Conv2d"):
        grouped_conv_diagram(nn.Linear(2, 2), SHAPE)
    with pytest.raises(ValueError, match="at most 8 groups"):
        grouped_conv_diagram(nn.Conv2d(64, 64, 3, groups=16), SHAPE)
    with pytest.raises(ValueError, match="divide"):
        shuffle_diagram(10, 3)
    with pytest.raises(ValueError, match="at most 48"):
        shuffle_diagram(64, 4)
    with pytest.raises(ValueError, match="at least one step"):
        pipeline_diagram([], {})
    with pytest.raises(ValueError, match="not in the pipeline"):
        pipeline_diagram(["a"], {"b": {"x": 1.0}})
    assert diagrams.MAX_BOXES >= 20


def test_several_blocks_side_by_side():
    fig = block_diagram({"bottleneck": resnet.Bottleneck(64, 16), "fire": squeezenet.Fire(64, 8, 32, 32)}, SHAPE)
    assert [ax.get_title() for ax in fig.axes] == ["bottleneck", "fire"]
    with pytest.raises(ValueError, match="at least one"):
        block_diagram({}, SHAPE)
    with pytest.raises(ValueError, match="two different titles"):
        merge_diagram(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1), (1, 2, 4, 4), titles=("same", "same"))


def test_drawing_leaves_the_module_alone():
    block = resnet.Bottleneck(64, 16).train()
    before = {k: v.clone() for k, v in block.state_dict().items()}
    block_diagram(block, SHAPE)
    assert block.training and all(torch.equal(before[k], v) for k, v in block.state_dict().items())


def test_a_transformer_block_is_drawn_with_its_linear_layers_and_without_its_cache_argument():
    from helpers import lm
    fig = block_diagram(lm.Block(64, 4), (1, 8, 64), wrap=[lm.split_heads, lm.merge_heads])
    labels = texts(fig)
    assert sorted(t for t in labels if t.startswith("Linear")) == ["Linear 256→64", "Linear 64→192", "Linear 64→256 + GELU",
                                                                   "Linear 64→64"]
    assert sum(t.startswith("input") for t in labels) == 1  # cache=None is fixed, not a second input
    assert labels.count("split heads") == 3 and labels.count("LayerNorm") == 2
    assert not any(t in ("mul", "getattr", "gt", "_assert_is_none") for t in labels)  # shape arithmetic is not drawn


def test_the_kv_cache_is_drawn_position_by_position():
    fig = diagrams.kv_cache_diagram(5, 3)
    labels = texts(fig)
    assert [t for t in labels if t in ("q5", "q6", "q7", "q4", "q8")] == ["q5", "q6", "q7"]
    assert labels.count("7") == 2 and labels.count("0") == 2  # a key and a value per position
    for bad in ((-1, 1), (3, 0), (20, 5), (2.0, 1)):
        with pytest.raises(ValueError, match="cached"):
            diagrams.kv_cache_diagram(*bad)
