"""Datasets: Fashion-MNIST (the course's default), MNIST and CIFAR-10, through torchvision.

:func:`load_dataset` looks for the files under ``data/`` first, then for Debian's offline copy of
Fashion-MNIST (package ``dataset-fashion-mnist``), then asks torchvision to download them. With no
copy and no network it stops with one error that lists the ways to get the data.

The images are decoded once into tensors (normalised with the dataset's mean and std), which
makes training on a CPU several times faster than decoding every image in every epoch. In fast
mode a fixed, seeded subset is returned, the same one on every run.

``python -m helpers prepare`` prepares Fashion-MNIST (``make lab`` and ``make test`` call it).
"""
import gzip
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from torchvision import datasets

from .env import DATA_DIR, FAST

# name -> torchvision class, per-channel mean and std of the training images
DATASETS = {
    "fashion-mnist": (datasets.FashionMNIST, (0.2860,), (0.3530,)),
    "mnist": (datasets.MNIST, (0.1307,), (0.3081,)),
    "cifar10": (datasets.CIFAR10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
DEBIAN_COPIES = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}  # apt-get install dataset-fashion-mnist
FAST_SIZES = {True: 2000, False: 1000}  # images in the fast-mode subset: train=True / train=False


class DatasetNotFoundError(RuntimeError):
    """The dataset is not on this machine and could not be downloaded."""


def _canonical(name):
    if not isinstance(name, str):
        raise TypeError(f"the dataset name must be a string such as 'fashion-mnist', got {name!r}")
    key = name.lower().replace("_", "").replace("-", "")
    for known in DATASETS:
        if key == known.replace("-", ""):
            return known
    raise ValueError(f"unknown dataset {name!r}; the course knows {', '.join(DATASETS)}")


def _open(name, root, train):
    """The torchvision dataset if its files are under root, else None."""
    try:
        return DATASETS[name][0](root, train=train, download=False)
    except RuntimeError:  # torchvision's "Dataset not found" (also for corrupted files)
        return None


def _unpack_debian_copy(name, root):
    """Decompress the Debian package's idx files into root/<Class>/raw, where torchvision looks."""
    source = DEBIAN_COPIES.get(name)
    if source is None or not source.is_dir():
        return False
    raw = Path(root) / DATASETS[name][0].__name__ / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in sorted(source.glob("*-ubyte.gz")):
        target = raw / gz.name[: -len(".gz")]
        if target.exists():
            continue
        # Debian recompressed these files, so torchvision's checksum of the .gz would reject them;
        # unpacked, they load. Write to a temporary file first so a crash never leaves half a file.
        with gzip.open(gz) as src, tempfile.NamedTemporaryFile(dir=raw, delete=False) as tmp:
            shutil.copyfileobj(src, tmp)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
    return True


def _not_found_message(name, root, error):
    folder = Path(root) / DATASETS[name][0].__name__ / "raw"
    ways = [f"connect to the internet and run again: torchvision downloads it into {root};"]
    if name in DEBIAN_COPIES:
        ways.insert(0, "on Debian or Ubuntu: sudo apt-get install dataset-fashion-mnist, then run again;")
    ways.append(f"or copy the dataset's files (from a machine that has them) into {folder}/.")
    return (
        f"{name} is not on this machine and could not be downloaded ({type(error).__name__}: {error}).\n"
        "Any one of these fixes it:\n  * " + "\n  * ".join(ways)
    )


def prepare(name="fashion-mnist", root=None):
    """Make sure the dataset's files are under ``root`` (``data/`` by default); returns the root."""
    name = _canonical(name)
    root = Path(root or DATA_DIR)
    if _open(name, root, True) and _open(name, root, False):
        return root
    if _unpack_debian_copy(name, root) and _open(name, root, True) and _open(name, root, False):
        return root
    try:
        for train in (True, False):
            DATASETS[name][0](root, train=train, download=True)
    except Exception as error:  # offline: URLError, socket errors, torchvision's RuntimeError
        raise DatasetNotFoundError(_not_found_message(name, root, error)) from None
    return root


def load_dataset(name="fashion-mnist", train=True, *, root=None, fast=None):
    """A dataset of normalised image tensors ``(N, C, H, W)`` and integer labels.

    ``fast`` defaults to the course's fast mode: then a fixed subset of 2000 training or 1000 test
    images is returned, chosen with a fixed seed. The class names are in ``.classes``.
    """
    name = _canonical(name)
    root = prepare(name, root)
    raw = _open(name, root, train)
    images = torch.as_tensor(raw.data)
    if images.dim() == 3:  # (N, H, W) grey images -> (N, 1, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR keeps (N, H, W, C) in NumPy
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(raw.targets, dtype=torch.long)
    if FAST if fast is None else fast:
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[: FAST_SIZES[train]]
        images, labels = images[keep], labels[keep]
    _, mean, std = DATASETS[name]
    images = (images.float() / 255 - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    dataset = TensorDataset(images, labels)
    dataset.classes = list(raw.classes)
    return dataset

