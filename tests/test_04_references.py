"""The references of notebook 04's exercises (helpers.models): right, and clear on bad input."""
import pytest
import torch
from torch import nn
from torchvision.models import mobilenetv2

from helpers import count_params
from helpers.models import inverted_residual, squeeze_excite
from helpers.train import topk_accuracy


@pytest.mark.parametrize("c_in, c_out, stride, expand", [(32, 32, 1, 6), (16, 24, 2, 6), (24, 32, 1, 6),
                                                         (16, 16, 2, 6), (32, 16, 1, 1), (16, 16, 1, 4)])
def test_inverted_residual_has_the_documented_size_shape_and_shortcut(c_in, c_out, stride, expand):
    block = inverted_residual(c_in, c_out, stride, expand).eval()
    wide = c_in * expand
    documented = wide * (c_in + c_out + 13) + 2 * c_out if expand > 1 else c_in * (c_out + 11) + 2 * c_out
    assert count_params(block) == documented
    assert isinstance(block, mobilenetv2.InvertedResidual)
    x = torch.randn(2, c_in, 9, 9)
    assert block(x).shape == (2, c_out, 5 if stride == 2 else 9, 5 if stride == 2 else 9)
    with torch.no_grad():  # the shortcut: block(x) - x is the layers' output exactly when the shape is kept
        shortcut = stride == 1 and c_in == c_out
        torch.testing.assert_close(block(x) - (x if shortcut else 0), block.conv(x))
    assert not isinstance(block.conv[-1], (nn.ReLU, nn.ReLU6)), "the projection is linear"


@pytest.mark.parametrize("args, says", [((16, 16, 3), "stride must be 1 or 2"), ((16, 16, 1, 0), "expand must be"),
                                        ((0, 16), "c_in must be"), ((16, 16.0), "c_out must be"),
                                        ((16, 16, 1, 1.5), "expand must be"), ((16, 16, True), "stride must be")])
def test_inverted_residual_refuses_bad_sizes(args, says):
    with pytest.raises(ValueError, match=says):
        inverted_residual(*args)


def test_squeeze_excite_is_torchvisions_with_c_over_r_channels():
    for c, r in ((64, 16), (48, 4), (24, 16), (16, 1)):
        se = squeeze_excite(c, r)
        s = c // r
        assert se.fc1.out_channels == s and count_params(se) == 2 * c * s + s + c
    x = torch.randn(2, 64, 5, 5)
    se = squeeze_excite(64)
    scale = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    torch.testing.assert_close(se(x), x * scale)


@pytest.mark.parametrize("args, says", [((8,), "leaves no channel"), ((16, 0), "reduction must be"),
                                        ((0,), "c must be"), ((16.0,), "c must be")])
def test_squeeze_excite_refuses_bad_sizes(args, says):
    with pytest.raises(ValueError, match=says):
        squeeze_excite(*args)


def test_topk_accuracy_counts_each_image_once():
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.9],    # ranking 3, 1, 2, 0
                           [0.8, 0.1, 0.3, 0.2],    # ranking 0, 2, 3, 1
                           [0.0, 0.4, 0.6, 0.5]])   # ranking 2, 3, 1, 0
    labels = torch.tensor([1, 0, 0])
    assert [topk_accuracy(logits, labels, k) for k in (1, 2, 3, 4)] == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1])
    many = torch.randn(500, 10)
    targets = torch.randint(0, 10, (500,))
    assert topk_accuracy(many, targets) == pytest.approx((many.argmax(1) == targets).float().mean().item())
    ranks = (many > many.gather(1, targets[:, None])).sum(1)  # how many classes score above the label
    for k in (1, 3, 5, 10):
        assert topk_accuracy(many, targets, k) == pytest.approx((ranks < k).float().mean().item())


@pytest.mark.parametrize("logits, labels, k, error, says", [
    (torch.randn(4, 10), torch.zeros(4, dtype=torch.long), 0, ValueError, "from 1 to the number of classes (10)"),
    (torch.randn(4, 10), torch.zeros(4, dtype=torch.long), 11, ValueError, "from 1 to the number of classes"),
    (torch.randn(4, 10), torch.zeros(3, dtype=torch.long), 1, ValueError, "labels [N]"),
    (torch.randn(10), torch.zeros(10, dtype=torch.long), 1, ValueError, "[N, classes]"),
    (torch.randn(4, 10), torch.tensor([0, 1, 2, 10]), 1, ValueError, "class indices from 0 to 9"),
    (torch.randn(4, 10), torch.zeros(4), 1, ValueError, "class indices"),
    (torch.randn(0, 10), torch.zeros(0, dtype=torch.long), 1, ValueError, "no rows"),
    (torch.randn(4, 10), [0, 1, 2, 3], 1, TypeError, "must be tensors"),
])
def test_topk_accuracy_says_what_is_wrong(logits, labels, k, error, says):
    with pytest.raises(error) as raised:
        topk_accuracy(logits, labels, k)
    assert says in str(raised.value)
