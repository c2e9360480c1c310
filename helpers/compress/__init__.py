"""Compression techniques as reusable functions, one module per lesson, for the pipeline notebook and later lessons.

Each technique is first built from scratch in its own lesson; these are the tested, reusable
versions. Every function returns a new model and leaves the one passed in unchanged.

Pruning (``pruning.py``, notebook 05):

* :func:`prune_unstructured`: zero the smallest-magnitude weights of the conv and linear layers
  (``torch.nn.utils.prune``, made permanent). Same shapes, same file size, same speed: only zeros.
* :func:`make_permanent`: turn the masks of a model pruned with ``keep_masks=True`` into plain zeros.
* :func:`prune_channels`: remove whole output channels of the convolutions and rebuild smaller
  dense layers (Conv -> BN -> Conv, and Conv -> Flatten -> Linear), so the model really shrinks.
* :func:`sparsity`: the fraction of conv and linear weights that are zero.
* :func:`global_magnitude_masks`, :func:`pack_sparse` / :func:`unpack_sparse`, :func:`remove_channels`: one global
  magnitude threshold for several layers, a bit mask plus the kept values, and one conv + BN pair rebuilt without
  its k weakest channels (notebook 05's exercises).

Quantization (``quantization.py``, notebook 06):

* :func:`quantize`: an int8 copy of a model for CPU inference (post-training static quantization).
* :func:`quantized_engine`: which of PyTorch's quantized CPU engines it uses on this machine.
* :func:`ao_warnings_off`: silence ``torch.ao.quantization``'s deprecation warnings in a ``with`` block.
* :func:`affine_params`, :func:`fake_quantize`, :func:`fixed_point`, :func:`int8_linear`: the from-scratch pieces
  notebook 06 has students write (scale and zero point, symmetric fake quantization, the fixed-point multiplier,
  an integer-only linear layer), each checked against PyTorch.

Distillation (``distillation.py``, notebook 07) and low rank (``lowrank.py``, notebook 08):

* :func:`distillation_loss` and :func:`distill`: train a student on a teacher's softened outputs.
* :func:`teacher_logits`: the teacher's outputs for a whole dataset, computed once for many students.
* :func:`soft_targets`: the softmax at temperature T (notebook 07's first exercise).
* :func:`low_rank`: replace Linear layers by two thinner ones from a truncated SVD.
* :func:`factorise_linear`, :func:`rank_for_energy`, :func:`pq_decode`: one Linear split at rank r, the rank that keeps
  a share of the energy, and product quantization's decoding (notebook 08's exercises).

Fusion and re-parameterisation (``fusion.py``, notebook 09; for inference: every function returns a copy in eval mode):

* :func:`fold_bn`: one Conv2d or Linear that computes a BatchNorm applied to its output.
* :func:`fuse_bn`: fold every BatchNorm that follows a Conv2d or Linear inside a model's ``nn.Sequential`` containers.
* :func:`merge_parallel`: one Conv2d for parallel convolutions of the same input, summed or concatenated.
* :func:`fold_avg_pool`: a k x k average pool followed by a 1x1 conv as one k x k conv (exact, with the pool's padding counted).
* :func:`tree_branches_exact`: the linear branches of a ``TreeBlock`` (1x1, 3x3, average pool) as exact convolutions.
* :func:`fit_conv`: the Conv2d closest, by least squares, to any module on sample inputs.
* :func:`merge_repvgg`: one ``RepVGGBlock`` merged into one 3x3 conv and its ReLU (exact).
* :func:`reparameterize`: each ``RepVGGBlock`` of a model merged into one 3x3 conv (exact).
* :func:`merge_tree_blocks`: each ``TreeBlock`` merged into one 3x3 conv (exact for its linear
  branches, least squares for the non-linear one).
* :func:`freeze`: a model traced and frozen by TorchScript, for deployment: no Python between layers.
"""
from .distillation import distill, distillation_loss, soft_targets, teacher_logits
from .fusion import (FrozenModel, fit_conv, fold_avg_pool, fold_bn, freeze, fuse_bn, identity_conv, merge_parallel,
                     merge_repvgg, merge_tree_blocks, reparameterize, tree_branches_exact)
from .lowrank import factorise_linear, low_rank, pq_decode, rank_for_energy
from .pruning import (global_magnitude_masks, make_permanent, pack_sparse, prune_channels, prune_unstructured,
                      remove_channels, sparsity, unpack_sparse)
from .quantization import (affine_params, ao_warnings_off, fake_quantize, fixed_point, int8_linear, quantize,
                           quantized_engine)

__all__ = [
    "FrozenModel", "global_magnitude_masks", "pack_sparse", "remove_channels", "unpack_sparse", "factorise_linear", "pq_decode", "rank_for_energy", "soft_targets", "affine_params", "ao_warnings_off", "fake_quantize", "fixed_point", "int8_linear", "distill", "distillation_loss", "fit_conv", "fold_avg_pool", "fold_bn", "freeze",
    "fuse_bn", "tree_branches_exact",
    "identity_conv", "low_rank", "make_permanent", "merge_parallel", "merge_repvgg", "merge_tree_blocks", "prune_channels",
    "prune_unstructured", "quantize", "quantized_engine", "reparameterize", "sparsity", "teacher_logits",
]
