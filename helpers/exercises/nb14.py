"""Notebook 14 (deployment): one batch of the calibration data reader of ONNX Runtime's static int8, 4-bit codes packed
two per byte, a data-dependent branch rewritten so that torch.export can capture it; one size worked out;
and the challenge: the smallest file of the compressed VGG, at least 100x smaller than the original's, with at
most half a point of accuracy lost."""
import numpy as np
import torch

from ..deploy import calibration_batch, pack_nibbles
from . import Case, difference, exercise
from .challenges import define


# ---------------------------------------------------------------- 14.1: one batch of the calibration reader

def _images(count, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(count, 1, size, size, generator=g),
                                          torch.randint(0, 10, (count,), generator=g))


def _same_batch(got, want):
    """None when ``got`` is the batch ``want`` is: the same key, a float32 NumPy array of the same values."""
    if want is None:
        return None if got is None else f"returned {_short_batch(got)}; expected None (no image is left)"
    if not isinstance(got, dict):
        return f"returned {_short_batch(got)}; expected a dict {{input name: array}}"
    if set(got) != set(want):
        return f"keys {sorted(got)}, expected {sorted(want)} (the key is the graph's input name)"
    key = next(iter(want))
    array = got[key]
    if not isinstance(array, np.ndarray):
        return f"a {type(array).__name__} under {key!r}; expected a NumPy array (what ONNX Runtime takes)"
    if array.dtype != np.float32:
        return f"dtype {array.dtype}; expected float32 (the graph's input type)"
    return difference(torch.from_numpy(array), torch.from_numpy(want[key]))


def _short_batch(value):
    return "None" if value is None else type(value).__name__


@exercise("14.1", "one batch of ONNX Runtime's calibration reader", reference=calibration_batch, compare=_same_batch,
          hint="Images batch * batch_size up to (not past) the end of the data, stacked into a float32 NumPy array "
               "[B, 1, H, W] under the key input_name; None when the first of them is beyond the data.")
def _batch_cases():
    eight = _images(8)
    return [Case("8 images, batches of 3, batch 0: images 0-2", (eight, "image", 0, 3)),
            Case("batch 1: images 3-5 (the batch number counts batches, not images)", (eight, "image", 1, 3)),
            Case("batch 2 of 3-image batches from 8 images: the last, short batch holds images 6-7",
                 (eight, "image", 2, 3)),
            Case("batch 3: it would start at image 9, beyond the data", (eight, "image", 3, 3)),
            Case("the input name 'input.1' (the key is the graph's input name)", (eight, "input.1", 0, 4)),
            Case("batch_size = 0", (eight, "image", 0, 0), raises=ValueError),
            Case("batch = -1", (eight, "image", -1, 4), raises=ValueError)]


# ---------------------------------------------------------------- 14.2: two 4-bit codes per byte

@exercise("14.2", "4-bit codes packed two per byte", reference=pack_nibbles,
          hint="Flatten; pad an odd count with one 0; byte i = codes[2i] | (codes[2i + 1] << 4), as uint8 "
               "(the first code in the low half). TypeError unless uint8, ValueError for a code above 15.")
def _pack_cases():
    g = torch.Generator().manual_seed(0)
    return [Case("6 codes: 3 bytes, the first code of each pair in the low 4 bits",
                 (torch.tensor([1, 2, 3, 4, 15, 0], dtype=torch.uint8),)),
            Case("5 codes (odd): the last byte's high half is 0", (torch.tensor([7, 8, 9, 10, 11], dtype=torch.uint8),)),
            Case("a 2-D tensor [3, 4] of codes, packed in row order",
                 (torch.randint(0, 16, (3, 4), generator=g, dtype=torch.uint8),)),
            Case("every code 15 (no overflow past 8 bits)", (torch.full((4,), 15, dtype=torch.uint8),)),
            Case("one code", (torch.tensor([9], dtype=torch.uint8),)),
            Case("a code of 16, which 4 bits cannot hold", (torch.tensor([16, 1], dtype=torch.uint8),), raises=ValueError),
            Case("an int64 tensor, not uint8", (torch.tensor([1, 2]),), raises=TypeError)]


# ---------------------------------------------------------------- 14.3: a branch torch.export can capture

def gate(x, threshold):
    """Every image of the batch ``x`` [N, C, H, W] whose mean is above ``threshold`` doubled, the others as they
    are: both branches computed, one picked per image by ``torch.where`` (no Python ``if`` on a value)."""
    bright = x.mean(dim=(1, 2, 3), keepdim=True) > threshold
    return torch.where(bright, 2 * x, x)


class DataDependentBranch(RuntimeError):
    """Raised by :class:`NoBranchTensor` where torch.export would stop: a tensor's value read by Python."""


class NoBranchTensor(torch.Tensor):
    """A tensor that refuses, as torch.export does, to give Python its value (``if t:``, ``bool()``, ``.item()``,
    ``int()``, ``float()``): a check can see a data-dependent branch without exporting anything."""

    READS = (torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.__int__, torch.Tensor.__float__,
             torch.Tensor.__index__, torch.Tensor.tolist)

    def __deepcopy__(self, memo):
        return self.as_subclass(torch.Tensor).clone().as_subclass(type(self))

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in cls.READS:
            raise DataDependentBranch("a Python `if` (or bool(), .item()) on a tensor's value: torch.export cannot "
                                      "capture that (data-dependent control flow); pick with torch.where")
        return super().__torch_function__(func, types, args, kwargs or {})


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    shift = torch.tensor([1.0, -1.0, 0.3, -0.3, 2.0, -2.0])[:, None, None, None]  # bright and dark images mixed
    return torch.randn(6, 1, 5, 5, generator=g) * 0.5 + shift


def _same_values(got, want):
    if isinstance(got, torch.Tensor):
        got = got.as_subclass(torch.Tensor)
    problem = difference(got, want.as_subclass(torch.Tensor))
    return f"{problem} (each image is gated by its own mean)" if problem else None


@exercise("14.3", "a data-dependent branch rewritten for torch.export", reference=gate, compare=_same_values,
          hint="Compute 2 * x and x and choose per image: torch.where(x.mean(dim=(1, 2, 3), keepdim=True) > threshold, "
               "2 * x, x). A Python `if` on a tensor's value is what torch.export cannot follow.")
def _gate_cases():
    x = _batch()
    return [Case("6 bright and dark images, threshold 0.0", (x, 0.0)),
            Case("threshold 0.5: only the brighter images doubled", (x, 0.5)),
            Case("one image, batch of 1", (x[1:2], 0.0)),
            Case("threshold -5.0: every image doubled", (x, -5.0)),
            Case("a batch that refuses, as torch.export does, to give Python a tensor's value",
                 (x.as_subclass(NoBranchTensor), 0.0))]


# ---------------------------------------------------------------- worked out

exercise("14.4", "bytes of Linear(1568 -> 256) at 4 bits: codes two per byte, a 16-value float16 codebook, "
         "float32 biases", expected=lambda: 1568 * 256 // 2 + 16 * 2 + 256 * 4,
         hint="Weights x 4 bits / 8 bits per byte, plus 16 values x 2 bytes, plus 256 biases x 4 bytes.")


# ---------------------------------------------------------------- the challenge

def _measure(path):
    from pathlib import Path

    from ..data import load_dataset
    from ..deploy import load_packed
    from ..env import FAST
    from ..measure import model_size
    from ..train import evaluate, trained_small_vgg

    path = Path(path)
    original = trained_small_vgg()
    test = load_dataset("fashion-mnist", train=False)
    if FAST:
        test = torch.utils.data.Subset(test, range(1000))
    model = load_packed(path)
    accuracy, original_accuracy = evaluate(model, test), evaluate(original, test)
    size = path.stat().st_size
    return {"accuracy": accuracy, "points lost vs the original": 100 * (original_accuracy - accuracy),
            "file_KB": size / 1024, "x smaller than the original's file": model_size(original) / size}


define("14", "the smallest file of the course's VGG (written by save_packed, loaded back by load_packed) at least "
       "100x smaller than the original's fp32 file, losing at most 0.5 point of test accuracy",
       _measure, targets={"points lost vs the original": ("<=", 0.5), "x smaller than the original's file": (">=", 100.0)},
       score="file_KB", higher_is_better=False)
