"""Knowledge distillation (notebook 07): train a small student on a teacher's softened outputs."""

import torch
from torch import nn


def _check_distillation(T, alpha):
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"the temperature T must be a number > 0 (1 leaves the softmax as it is; 2-8 is usual), got {T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha weighs the teacher's soft targets against the labels and must be in [0, 1], got {alpha!r}")


def soft_targets(logits, T):
    """The softmax of ``logits / T`` over the last dimension (the classes): Hinton et al.'s soft targets.

    ``T = 1`` is the ordinary softmax; ``T > 1`` softens it (the runners-up get more probability),
    ``T < 1`` sharpens it. Computed by ``torch.softmax``, which subtracts the largest logit first, so
    that large logits do not overflow. Raises ``TypeError`` unless ``logits`` is a floating-point
    tensor, ``ValueError`` unless ``T > 0``.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {_describe(logits)}")
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not T > 0:
        raise ValueError(f"the temperature T must be a number > 0 (1 leaves the softmax as it is), got {T!r}")
    return torch.softmax(logits / T, dim=-1)


def _describe(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {str(value.dtype).replace('torch.', '')} and shape {tuple(value.shape)}"
    return type(value).__name__


def _check_logits(student_logits, teacher_logits, labels):
    for name, tensor in (("student_logits", student_logits), ("teacher_logits", teacher_logits), ("labels", labels)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {_describe(tensor)}")
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must be [batch, classes], got shape {tuple(student_logits.shape)}")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"the teacher's logits {tuple(teacher_logits.shape)} and the student's "
                         f"{tuple(student_logits.shape)} must have the same shape [batch, classes]")
    if labels.shape not in (student_logits.shape[:1], student_logits.shape):  # class indices, or probabilities
        raise ValueError(f"labels must hold one class index per image, shape ({len(student_logits)},), "
                         f"got {tuple(labels.shape)}")


def distillation_loss(student_logits, teacher_logits, labels, T=4.0, alpha=0.9):
    """Hinton et al.'s loss: ``alpha * T² * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy``.

    ``teacher_T`` and ``student_T`` are the softmax of the logits divided by ``T``. The KL term is
    averaged over the batch (``reduction="batchmean"``, the true KL divergence per sample) and scaled
    by ``T²`` so that its gradients keep their size whatever the temperature. Both distributions are
    taken as log-probabilities (``log_target=True``), so a teacher probability that underflows to 0
    gives 0, not ``0 * log 0 = nan``.

    Raises ``ValueError`` when ``T <= 0``, when ``alpha`` is outside [0, 1], or when the shapes do not
    fit (both logits ``[batch, classes]``; labels ``[batch]`` class indices, or class probabilities shaped
    like the logits, as ``F.cross_entropy`` takes them); ``TypeError`` when one is not a tensor.
    """
    _check_distillation(T, alpha)
    _check_logits(student_logits, teacher_logits, labels)
    soft = nn.functional.kl_div(nn.functional.log_softmax(student_logits / T, dim=1),
                                nn.functional.log_softmax(teacher_logits / T, dim=1),
                                reduction="batchmean", log_target=True)
    return alpha * T * T * soft + (1 - alpha) * nn.functional.cross_entropy(student_logits, labels)


def teacher_logits(teacher, data, *, batch_size=512):
    """The ``teacher``'s logits for every item of ``data``, in order (a tensor on the CPU).

    Computed once, they let :func:`distill` train many students without running the teacher again:
    the teacher is in eval mode and the data is not augmented, so its outputs never change.
    """
    from ..env import on_device

    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher_logits expects the teacher as a torch.nn.Module, got {type(teacher).__name__}")
    teacher.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size)
    with on_device(teacher) as where, torch.no_grad():
        return torch.cat([teacher(images.to(where)).cpu() for images, *_ in loader])


class _WithLogits(torch.utils.data.Dataset):
    """``data`` with the teacher's logits as a third item: ``(image, label, logits)``."""

    def __init__(self, data, logits):
        self.data, self.logits = data, logits

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, label = self.data[index][:2]
        return image, label, self.logits[index]


def distill(student, teacher, data, *, T=4.0, alpha=0.9, epochs=1, lr=1e-3, batch_size=128, seed=0, progress=True):
    """Train ``student`` (in place) on ``data`` with :func:`distillation_loss` against ``teacher``.

    ``teacher`` is a model, which runs forward in eval mode for every batch and is not changed, or
    its logits for every item of ``data`` from :func:`teacher_logits` (the same training, without
    running the teacher again for each student and epoch). Returns ``fit``'s history. Like ``fit``, it
    trains on the GPU when there is one and gives student and teacher back where they were.
    """
    from ..env import on_device
    from ..train import fit

    _check_distillation(T, alpha)
    if not isinstance(student, nn.Module):
        raise TypeError(f"distill(student, teacher, data): the student must be a torch.nn.Module, got {type(student).__name__}")
    if isinstance(teacher, torch.Tensor):
        if teacher.dim() != 2 or len(teacher) != len(data):
            raise ValueError(f"precomputed teacher logits must have one row per item of data ({len(data)}), got shape "
                             f"{tuple(teacher.shape)}: compute them with teacher_logits(teacher, data) on the same data")
        data = _WithLogits(data, teacher)
    elif isinstance(teacher, nn.Module):
        teacher.eval()
    else:
        raise TypeError("distill(student, teacher, data): the teacher must be a torch.nn.Module or its logits "
                        f"from teacher_logits(teacher, data), got {type(teacher).__name__}")

    def loss_fn(model, images, labels, logits=None):  # logits: precomputed, or None to run the teacher
        if logits is None:
            with torch.no_grad():
                logits = teacher(images)
        outputs = model(images)
        return outputs, distillation_loss(outputs, logits, labels, T, alpha)

    teachers = [teacher] if isinstance(teacher, nn.Module) else []
    with on_device(*teachers):  # the teacher goes where fit takes the student
        return fit(student, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, loss_fn=loss_fn,
                   progress=progress)
