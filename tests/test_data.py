import urllib.error

import pytest
import torch
from torchvision import datasets

from helpers import DatasetNotFoundError, load_dataset
from helpers import data as data_module


def test_fast_subset_is_fixed_and_normalised():
    a = load_dataset("fashion-mnist", train=True, fast=True)
    b = load_dataset("fashion-mnist", train=True, fast=True)
    images, labels = a.tensors
    assert images.shape == (2000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))
    assert torch.equal(labels, b.tensors[1])  # same subset on every call
    assert abs(images.mean().item()) < 0.1 and abs(images.std().item() - 1) < 0.1
    assert a.classes[0] == "T-shirt/top" and len(a.classes) == 10


def test_full_test_set():
    test = load_dataset("Fashion_MNIST", train=False, fast=False)  # spelling variants are accepted
    assert len(test) == 10_000


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*fashion-mnist"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match="string"):
        load_dataset(3)


def test_offline_without_a_copy_names_the_ways_to_get_the_data(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(datasets.FashionMNIST, "download", offline)
    monkeypatch.setattr(data_module, "DEBIAN_COPIES", {"fashion-mnist": tmp_path / "no-such-folder"})
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(error.value)
    assert "could not be downloaded" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path / "FashionMNIST" / "raw") in message


@pytest.mark.skipif(not data_module.DEBIAN_COPIES["fashion-mnist"].is_dir(),
                    reason="Debian's dataset-fashion-mnist package is not installed")
def test_debian_copy_is_unpacked_where_torchvision_looks(tmp_path, monkeypatch):
    def offline(self):
        raise AssertionError("must not download when the Debian copy is there")

    monkeypatch.setattr(datasets.FashionMNIST, "download", offline)
    train = load_dataset("fashion-mnist", root=tmp_path, fast=False)
    assert len(train) == 60_000
    assert sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir()) == [
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
