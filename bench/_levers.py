"""Bench-only speed levers, each checked against the plain path by the scripts.

The levers the library adopted (frozen batch norm applied through the convolution weights, channels_last in the
backbone) live in `annotated_detr.backbone` (`Backbone(fuse_bn=True, channels_last=True)`, `fuse_frozen_bn`);
`_common.with_levers_off` builds the same model with them off. What stays here is what the library does not do:
folding the batch norms into the convolutions once (inference only: the folded model has new weights and a
different state dict), channels_last for transformers' model, and the output comparison."""
from __future__ import annotations
import copy
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from annotated_detr.backbone import ConvWithFrozenBN, FrozenBNInConv


def _folded_conv(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> nn.Conv2d:
    "A plain Conv2d computing `bn(conv(x))` for a frozen batch norm: w' = w*s, b' = beta - mean*s (+ b*s)."
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()                       # (C_out,)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight * scale[:, None, None, None])
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        new.bias.copy_(bn.bias + (b0 - bn.running_mean) * scale)
    new.weight.requires_grad_(False); new.bias.requires_grad_(False)
    if conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous():
        new = new.to(memory_format=torch.channels_last)
    return new


def fold_frozen_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Inference only: replace each conv + frozen batch norm by one plain conv with precomputed weights and bias,
    for the library's fused pairs (`ConvWithFrozenBN` + `FrozenBNInConv`) and for plain ones alike."""
    model = model if inplace else copy.deepcopy(model)
    n = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (cname, conv), (bname, bn) in zip(children, children[1:]):
            if type(conv) is ConvWithFrozenBN and type(bn) is FrozenBNInConv and conv.bn[0] is bn:
                pass
            elif not (type(conv) is nn.Conv2d and type(bn) is FrozenBatchNorm2d):
                continue
            setattr(parent, cname, _folded_conv(conv, bn)); setattr(parent, bname, nn.Identity()); n += 1
    model._folded_bn = n
    return model


def channels_last(model: nn.Module) -> nn.Module:
    "Store conv weights NHWC (inputs must be made channels_last too); for transformers' model."
    return model.to(memory_format=torch.channels_last)


def max_abs_diff(a: dict, b: dict, keys=('pred_logits', 'pred_boxes')) -> float:
    "Largest absolute difference over the given output keys (and aux outputs when present)."
    d = max((a[k].float() - b[k].float()).abs().max().item() for k in keys)
    for x, y in zip(a.get('aux_outputs', []), b.get('aux_outputs', [])):
        d = max(d, max((x[k].float() - y[k].float()).abs().max().item() for k in keys))
    return d
