"""Speed levers applied from outside the library (bench-only), each checked against the plain path."""
from __future__ import annotations
import copy
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def _folded_conv(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> nn.Conv2d:
    "A conv with bias equal to `bn(conv(x))` for a frozen batch norm: w' = w*s, b' = beta - mean*s (+ b*s)."
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()                       # (C_out,)
    new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                    device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight * scale[:, None, None, None])
        b0 = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        new.bias.copy_(bn.bias + (b0 - bn.running_mean) * scale)
    new.weight.requires_grad_(False); new.bias.requires_grad_(False)
    return new


def fold_frozen_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    "Fold every FrozenBatchNorm2d that directly follows a Conv2d (torchvision ResNet naming) into that conv. Inference only."
    model = model if inplace else copy.deepcopy(model)
    n = 0
    for mod in list(model.modules()):
        kids = dict(mod.named_children())
        for name, child in kids.items():          # convK / bnK pairs (stem, Bottleneck, BasicBlock)
            if isinstance(child, FrozenBatchNorm2d) and name.startswith('bn'):
                cname = 'conv' + name[2:]
                if isinstance(kids.get(cname), nn.Conv2d):
                    setattr(mod, cname, _folded_conv(kids[cname], child)); setattr(mod, name, nn.Identity()); n += 1
        if isinstance(mod, nn.Sequential):        # downsample = Sequential(conv, bn)
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], FrozenBatchNorm2d):
                    mod[i] = _folded_conv(mod[i], mod[i + 1]); mod[i + 1] = nn.Identity(); n += 1
    model._folded_bn = n
    return model


def channels_last(model: nn.Module) -> nn.Module:
    "Store conv weights NHWC (inputs must be made channels_last too)."
    return model.to(memory_format=torch.channels_last)


def max_abs_diff(a: dict, b: dict, keys=('pred_logits', 'pred_boxes')) -> float:
    "Largest absolute difference over the given output keys (and aux outputs when present)."
    d = max((a[k].float() - b[k].float()).abs().max().item() for k in keys)
    for x, y in zip(a.get('aux_outputs', []), b.get('aux_outputs', [])):
        d = max(d, max((x[k].float() - y[k].float()).abs().max().item() for k in keys))
    return d
