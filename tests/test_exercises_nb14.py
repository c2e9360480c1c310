"""Notebook 14's exercise checks fail on a wrong answer (one plausible mistake each)."""
import numpy as np
import pytest
import torch
from exercise_checks import assert_check_catches

from helpers.exercises import check


def _checked(batch, batch_size):
    if batch < 0 or batch_size < 1:
        raise ValueError("batch")


def batch_counts_images(data, input_name, batch, batch_size):
    """Takes `batch` as the first image's index, not the batch's number."""
    _checked(batch, batch_size)
    if batch >= len(data):
        return None
    images = torch.stack([data[i][0] for i in range(batch, min(batch + batch_size, len(data)))])
    return {input_name: images.numpy()}


def batch_runs_past_the_end(data, input_name, batch, batch_size):
    """No stop at the end of the data: range(start, start + batch_size) reads past the last image."""
    _checked(batch, batch_size)
    start = batch * batch_size
    if start >= len(data):
        return None
    return {input_name: torch.stack([data[i][0] for i in range(start, start + batch_size)]).numpy()}


def batch_of_float64(data, input_name, batch, batch_size):
    """The right images, but as float64 (np.array of Python floats): ONNX Runtime refuses them."""
    _checked(batch, batch_size)
    start = batch * batch_size
    if start >= len(data):
        return None
    return {input_name: np.array([data[i][0].tolist() for i in range(start, min(start + batch_size, len(data)))])}


def batch_as_a_tensor(data, input_name, batch, batch_size):
    """A torch tensor where ONNX Runtime takes a NumPy array."""
    _checked(batch, batch_size)
    start = batch * batch_size
    if start >= len(data):
        return None
    return {input_name: torch.stack([data[i][0] for i in range(start, min(start + batch_size, len(data)))])}


def pack_high_first(codes):
    """The first code of each pair in the high half of the byte: the reverse of the convention."""
    if codes.dtype != torch.uint8:
        raise TypeError("uint8")
    flat = codes.flatten()
    if flat.numel() and flat.max() > 15:
        raise ValueError("16")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] << 4) | flat[1::2]


def pack_even_only(codes):
    """Assumes an even count: an odd one loses its last code."""
    if codes.dtype != torch.uint8:
        raise TypeError("uint8")
    flat = codes.flatten()
    if flat.numel() and flat.max() > 15:
        raise ValueError("16")
    flat = flat[: flat.numel() // 2 * 2]
    return flat[0::2] | (flat[1::2] << 4)


def pack_unchecked(codes):
    """No check of the range: a 16 silently spills into the next code's bits."""
    flat = codes.flatten().to(torch.uint8)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def gate_on_the_batch_mean(x, threshold):
    """Gates the whole batch by its mean instead of each image by its own."""
    return torch.where(x.mean() > threshold, 2 * x, x)


def gate_with_an_if(x, threshold):
    """Right values, but a Python `if` per image: torch.export cannot capture it."""
    return torch.stack([2 * image if image.mean() > threshold else image for image in x])


WRONG = {"14.1": batch_counts_images, "14.2": pack_high_first, "14.3": gate_on_the_batch_mean}


@pytest.mark.parametrize("key", WRONG)
def test_a_wrong_answer_fails_its_check(key, capsys):
    assert_check_catches(key, WRONG[key], capsys)


@pytest.mark.parametrize("key, wrong, case, words", [
    ("14.1", batch_counts_images, 2, "value differs"),
    ("14.1", batch_runs_past_the_end, 3, "IndexError"),
    ("14.1", batch_of_float64, 1, "float32"),
    ("14.1", batch_as_a_tensor, 1, "NumPy array"),
    ("14.2", pack_high_first, 1, "value differs"),
    ("14.2", pack_even_only, 2, "shape"),
    ("14.2", pack_unchecked, 6, "should raise ValueError"),
    ("14.3", gate_on_the_batch_mean, 1, "its own mean"),
    ("14.3", gate_with_an_if, 5, "DataDependentBranch"),
])
def test_each_mistake_is_named_by_its_case(key, wrong, case, words, capsys):
    check(key, wrong)
    out = capsys.readouterr().out
    assert out.startswith(f"❌ case {case} of") and words in out, out


@pytest.mark.parametrize("wrong", [1568 * 256 // 2, 1568 * 256 * 4 // 8 // 2 + 16 * 2 + 256 * 4,
                                   1568 * 256 // 2 + 16 * 4 + 256 * 4])
def test_a_wrong_number_fails(wrong, capsys):
    check("14.4", wrong)
    assert capsys.readouterr().out.startswith("❌")
