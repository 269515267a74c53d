"""Bench-only speed levers, each checked against the plain path by the scripts.

The levers the library adopted (frozen batch norm applied through the convolution weights, channels_last in the
backbone) live in `annotated_detr.backbone` (`Backbone(fuse_bn=True, channels_last=True)`, `fuse_frozen_bn`);
`_common.with_levers_off` builds the same model with them off. What stays here: folding the batch norms into the
convolutions once (inference only, through the export appendix's `fold_batch_norms`), channels_last for
transformers' model, and the output comparison."""
from __future__ import annotations
import torch
from torch import nn


def fold_frozen_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Inference only: each conv + frozen batch norm as one plain conv with precomputed weights, by the library's
    `fold_batch_norms` (appendix export); conv weights that were channels_last stay channels_last. `inplace` is
    accepted for the scripts' calls; the result is always a new model."""
    from annotated_detr.export import fold_batch_norms
    cl = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
          and m.weight.is_contiguous(memory_format=torch.channels_last) and not m.weight.is_contiguous()}
    folded = fold_batch_norms(model)
    for n, m in folded.named_modules():
        if n in cl: m.to(memory_format=torch.channels_last)
    return folded


def channels_last(model: nn.Module) -> nn.Module:
    "Store conv weights NHWC (inputs must be made channels_last too); for transformers' model."
    return model.to(memory_format=torch.channels_last)


def max_abs_diff(a: dict, b: dict, keys=('pred_logits', 'pred_boxes')) -> float:
    "Largest absolute difference over the given output keys (and aux outputs when present)."
    d = max((a[k].float() - b[k].float()).abs().max().item() for k in keys)
    for x, y in zip(a.get('aux_outputs', []), b.get('aux_outputs', [])):
        d = max(d, max((x[k].float() - y[k].float()).abs().max().item() for k in keys))
    return d
