"""Training: a plain, seeded ``fit`` / ``evaluate`` loop and a cache of trained models.

The loop is deliberately ordinary (Adam, cross-entropy, a tqdm progress bar) so that the
lessons can focus on what compression does to a model, not on how it was trained.
:func:`cached_model` trains a model once and reuses it from ``data/models/`` afterwards.
"""
import os
import re
import warnings

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .env import DATA_DIR, FAST, atomic_file, on_device, set_seed


def _check_data(data, what):
    if not isinstance(data, Dataset) or len(data) == 0:
        raise TypeError(
            f"{what} expects a non-empty torch Dataset of (image, label) pairs, such as "
            f"load_dataset('fashion-mnist'); got {type(data).__name__}"
        )


def evaluate(model, data, batch_size=512):
    """Accuracy of ``model`` on ``data``, a number between 0 and 1.

    Runs on the GPU when there is one; the model's mode and device are given back afterwards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"evaluate expects a torch.nn.Module, got {type(model).__name__}")
    _check_data(data, "evaluate")
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with on_device(model) as where, torch.inference_mode():
            for images, labels in DataLoader(data, batch_size=batch_size):
                correct += (model(images.to(where)).argmax(1).cpu() == labels).sum().item()
    finally:
        model.train(was_training)
    return correct / len(data)


def topk_accuracy(logits, labels, k=1):
    """The share of rows of ``logits`` ([N, classes]) whose label (``labels``, [N]) is among its ``k`` highest.

    ``k = 1`` is the ordinary accuracy. Returns a float in [0, 1]. Raises a TypeError unless both are
    tensors, and a ValueError unless ``logits`` is 2-D with at least one row, ``labels`` 1-D with one label
    per row, every label a class index, and ``k`` a whole number from 1 to the number of classes.
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"logits and labels must be tensors, got {type(logits).__name__} and {type(labels).__name__}")
    if logits.dim() != 2 or labels.dim() != 1 or len(labels) != len(logits):
        raise ValueError(f"logits must be [N, classes] and labels [N], "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    classes = logits.shape[1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= classes:
        raise ValueError(f"k must be a whole number from 1 to the number of classes ({classes}), got {k!r}")
    if labels.is_floating_point() or labels.is_complex() or ((labels < 0) | (labels >= classes)).any():
        raise ValueError(f"labels must be class indices from 0 to {classes - 1}")
    if len(labels) == 0:
        raise ValueError("no rows: the accuracy of nothing is undefined")
    best = logits.topk(k, dim=1).indices                     # [N, k]: the k highest classes of each row
    return (best == labels[:, None].to(best.device)).any(dim=1).float().mean().item()


def fit(model, train_data, *, epochs=1, lr=1e-3, batch_size=128, val_data=None, seed=0,
        loss_fn=None, progress=True):
    """Train ``model`` with Adam for ``epochs`` passes over ``train_data``; returns the history.

    The history is a list with one dict per epoch: ``loss`` (mean training loss), ``train_acc``
    (accuracy on the batches as they were seen) and, when ``val_data`` is given, ``val_acc``.
    ``loss_fn(model, images, labels)`` replaces the cross-entropy loss (distillation uses it); when
    the data yields more than ``(image, label)``, the extra items of the batch are passed after
    ``labels`` (distillation passes the teacher's precomputed logits that way).
    The model is trained on :func:`helpers.device` (the GPU when there is one) and given back, in eval
    mode, on the device it came from (:func:`helpers.env.on_device`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit expects a torch.nn.Module, got {type(model).__name__}")
    _check_data(train_data, "fit")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a whole number >= 1, got {epochs!r}")
    if not lr > 0:
        raise ValueError(f"lr (the learning rate) must be > 0, got {lr!r}")
    set_seed(seed)
    with on_device(model) as where:
        history = _train(model, train_data, where, epochs, lr, batch_size, val_data, seed, loss_fn, progress)
    model.eval()
    return history


def _train(model, train_data, where, epochs, lr, batch_size, val_data, seed, loss_fn, progress):
    """fit's loop, with the model already on ``where``."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(train_data, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    history = []
    for epoch in range(1, epochs + 1):
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", disable=not progress, leave=False)
        for images, labels, *extra in bar:
            images, labels = images.to(where), labels.to(where)
            if loss_fn is None:
                outputs = model(images)
                loss = nn.functional.cross_entropy(outputs, labels)
            else:
                outputs, loss = loss_fn(model, images, labels, *(item.to(where) for item in extra))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (outputs.argmax(1) == labels).sum().item()
            seen += len(labels)
            bar.set_postfix(loss=f"{total_loss / seen:.3f}")
        record = {"epoch": epoch, "loss": total_loss / seen, "train_acc": correct / seen}
        if val_data is not None:
            record["val_acc"] = evaluate(model, val_data)
        history.append(record)
    return history


def cached_model(name, build, train, *, fast=None):
    """Build a model and train it once; later calls load the trained weights from ``data/models``.

    ``build()`` returns a fresh, untrained model and ``train(model)`` trains it in place. Fast mode
    and full mode keep separate files (``<name>-fast.pt`` and ``<name>.pt``). A file that cannot be
    loaded (corrupted, or saved from a different architecture) is moved aside to ``<file>.bad``,
    never deleted, and the model is trained again. Weights are written atomically and loaded with
    ``weights_only=True``, so a cache file can never run code. The model comes back on the CPU,
    in eval mode, where the course measures it.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"the cache name must be letters, digits, '-', '_' or '.', got {name!r}")
    if not callable(build) or not callable(train):
        raise TypeError("cached_model(name, build, train): build and train must be functions")
    folder = DATA_DIR / "models"
    path = folder / f"{name}{'-fast' if (FAST if fast is None else fast) else ''}.pt"
    model = build()
    if not isinstance(model, nn.Module):
        raise TypeError(f"build() must return a torch.nn.Module, got {type(model).__name__}")
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.cpu().eval()
        except Exception as error:
            bad = path.with_name(path.name + ".bad")
            os.replace(path, bad)
            warnings.warn(f"could not load the cached model {path.name} ({type(error).__name__}); "
                          f"moved it to {bad.name} and training again.", stacklevel=2)
            model = build()
    train(model)
    with atomic_file(path) as file:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, file)
    return model.cpu().eval()


def _trained(name, build):
    from .data import load_dataset

    def train(model):
        fit(model, load_dataset("fashion-mnist"), epochs=4 if FAST else 5, lr=1e-3, batch_size=128)

    return cached_model(name, build, train)


def trained_small_vgg():
    """The course's VGG-like net (:func:`helpers.small_vgg`) trained on Fashion-MNIST, from the cache.

    The lessons on pruning, quantization, distillation, low rank and fusion all start from this one
    model. The first call trains it: five epochs on the 60,000 training images (about ten minutes
    on two CPU cores), or four quick epochs on the 2,000-image subset in fast mode.
    """
    from .models import small_vgg

    return _trained("small_vgg", small_vgg)


def trained_tree_net():
    """The course's Inception-like "tree" net (:func:`helpers.tree_net`), trained like
    :func:`trained_small_vgg` and cached; notebooks 09 and 10 use it."""
    from .models import tree_net

    # "_pool": the net with its average-pool branch; a cache of the older net (tree_net.pt) is another architecture
    return _trained("tree_net_pool", tree_net)
