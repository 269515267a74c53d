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


class _ConvFrozenBN(nn.Conv2d):
    "A Conv2d whose forward applies the following FrozenBatchNorm2d through its weights: conv(x, w*s) + (beta - mean*s)."
    def forward(self, x):
        bn = self._bn[0]
        scale = bn.weight * (bn.running_var + bn.eps).rsqrt()               # (C_out,)
        bias = bn.bias - bn.running_mean * scale
        if self.bias is not None: bias = bias + self.bias * scale
        return self._conv_forward(x, self.weight * scale[:, None, None, None], bias)


class _Skip(nn.Module):
    "Stands in the frozen batch norm's place; its buffers stay in the state dict."
    def __init__(self, bn):
        super().__init__()
        for k, v in bn.named_buffers(recurse=False): self.register_buffer(k, v)
        self.eps = bn.eps
    def forward(self, x): return x


def fuse_frozen_bn(model: nn.Module) -> nn.Module:
    """In place: each Conv2d followed by a FrozenBatchNorm2d computes both as one conv with scaled weights.
    Parameters, buffers and state-dict keys are unchanged and gradients flow to the original conv weights,
    so this works for training as well as inference (unlike `fold_frozen_bn`)."""
    def pair(parent, cname, bname):
        conv, bn = getattr(parent, cname), getattr(parent, bname)
        conv.__class__ = _ConvFrozenBN
        skip = _Skip(bn)
        object.__setattr__(conv, '_bn', [skip])   # not a registered submodule: no duplicate state-dict keys
        setattr(parent, bname, skip)
    n = 0
    for mod in list(model.modules()):
        kids = dict(mod.named_children())
        for name, child in kids.items():
            if isinstance(child, FrozenBatchNorm2d) and name.startswith('bn') and isinstance(kids.get('conv' + name[2:]), nn.Conv2d):
                pair(mod, 'conv' + name[2:], name); n += 1
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                if isinstance(mod[i], nn.Conv2d) and isinstance(mod[i + 1], FrozenBatchNorm2d):
                    pair(mod, str(i), str(i + 1)); n += 1
    model._fused_bn = n
    return model
