"""Shared helpers for the benchmark scripts: HF baseline model, interleaved timing, load and memory."""
from __future__ import annotations
import os, sys, time, json, statistics, subprocess, resource, platform

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path: sys.path.insert(0, _ROOT)   # run from a clone without installing

import torch

EXAMPLE_SHAPES = [(3, 765, 512), (3, 608, 911)]  # the two running-example images of chapter 00
COCO_SHAPES = [(3, 800, 1066), (3, 800, 1200)]   # two COCO images at the evaluation size (shorter side 800)


def loadavg() -> str:
    "The 1/5/15-minute load average as a string."
    try: return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError: return "n/a"


def machine() -> str:
    "One line that names the CPU, its core count, torch and the thread count."
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def random_images(shapes, seed=0) -> list:
    "Normalized-looking random images, one per shape."
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def pad_batch(images):
    "Zero-pad to the largest H, W; returns (pixels [B,3,H0,W0], mask [B,H0,W0] True=padding)."
    B, H0, W0 = len(images), max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    x = images[0].new_zeros(B, 3, H0, W0)
    mask = torch.ones(B, H0, W0, dtype=torch.bool)
    for k, im in enumerate(images):
        x[k, :, :im.shape[1], :im.shape[2]] = im
        mask[k, :im.shape[1], :im.shape[2]] = False
    return x, mask


def hf_detr(num_labels=91, aux_loss=False, backbone="resnet50", attn_implementation=None):
    "HuggingFace `DetrForObjectDetection` with DETR-R50's architecture and random weights, built offline."
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    import transformers; transformers.logging.set_verbosity_error()
    depths = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}[backbone]
    bc = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=depths,
                      layer_type="bottleneck", hidden_act="relu", downsample_in_bottleneck=False,
                      out_features=["stage4"])
    kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=bc,
                     num_queries=100, num_labels=num_labels, d_model=256, encoder_layers=6, decoder_layers=6,
                     encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                     decoder_ffn_dim=2048, dropout=0.1, auxiliary_loss=aux_loss,
                     # DETR's layers drop out attention weights and the FFN's hidden units too (nn.MultiheadAttention
                     # and the FFN with dropout=0.1); DetrConfig defaults both to 0, which on CPU would also let its
                     # training step take SDPA's flash kernel (no dropout support) where DETR must take the math path.
                     attention_dropout=0.1, activation_dropout=0.1,
                     class_cost=1, bbox_cost=5, giou_cost=2, bbox_loss_coefficient=5,
                     giou_loss_coefficient=2, eos_coefficient=0.1, **kw)
    torch.manual_seed(0)
    return DetrForObjectDetection(cfg)


def n_params(m) -> int: return sum(p.numel() for p in m.parameters())


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    "Time each callable `repeats` times, alternating between them (order flips each round) after `warmup` calls each."
    for _ in range(warmup):
        for f in fns.values(): f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    return times


def stats(ts) -> dict:
    "Median, quartiles, min and max of a list of seconds."
    ts = sorted(ts)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return dict(median=statistics.median(ts), q1=q[0], q3=q[2], min=ts[0], max=ts[-1], n=len(ts))


def fmt(s: dict, unit="s") -> str:
    "A stats dict as 'median (IQR q1-q3, min-max)'."
    return (f"{s['median']:.3f}{unit} (IQR {s['q1']:.3f}-{s['q3']:.3f}, min-max {s['min']:.3f}-{s['max']:.3f}, "
            f"n={s['n']})")


def report_ratio(times: dict, ours: str, theirs: str, goal: float | None = None, show: bool = True) -> float:
    "Print each timing (if `show`) and the ratio of medians ours/theirs (with the per-round ratios as a spread)."
    if show:
        for k, v in times.items(): print(f"  {k:>28s}: {fmt(stats(v))}")
    r = stats(times[ours])["median"] / stats(times[theirs])["median"]
    pair = sorted(a / b for a, b in zip(times[ours], times[theirs]))
    g = "" if goal is None else f"  goal <= {goal}: {'MET' if r <= goal else 'NOT MET'}"
    rmin = stats(times[ours])["min"] / stats(times[theirs])["min"]
    print(f"  ratio {ours}/{theirs} = {r:.3f} of medians; {rmin:.3f} of minima; per-round ratios "
          f"{pair[0]:.3f}..{pair[-1]:.3f} (median {statistics.median(pair):.3f}){g}")
    return r


def rss_now_kb() -> int:
    "Current resident set size in KiB (Linux /proc)."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb() -> int: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_peak(run, repeats: int = 2) -> dict:
    "Peak RSS above the RSS just before: of the first call of `run()` and of a later (steady-state) call, MiB."
    import gc
    gc.collect()
    before = rss_now_kb(); reset_peak(); run(); first = vm_hwm_kb() - before
    for _ in range(repeats - 1):
        gc.collect(); before2 = rss_now_kb(); reset_peak(); run(); steady = vm_hwm_kb() - before2
    return dict(first_call_mib=round(first / 1024, 1), steady_mib=round(steady / 1024, 1),
                rss_before_mib=round(before / 1024, 1), peak_total_mib=round(peak_rss_kb() / 1024, 1))


def peak_in_subprocess(script: str, impl: str, extra=()) -> dict:
    "Run `python script --mem impl` in a fresh process (so peaks do not mix) and parse its JSON line."
    out = subprocess.run([sys.executable, script, "--mem", impl, *extra], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("MEM "): return json.loads(line[4:])
    raise RuntimeError(f"no MEM line from {script} --mem {impl}:\n{out.stdout}\n{out.stderr}")


def ours_build_detr():
    "`annotated_detr.transformer.build_detr`."
    from annotated_detr.transformer import build_detr
    return build_detr


def reset_peak():
    "Reset the kernel's peak-RSS counter (VmHWM) of this process, so the next peak is of what follows."
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')


def vm_hwm_kb() -> int:
    "Peak RSS (VmHWM) of this process since start or the last `reset_peak`, KiB."
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM'): return int(line.split()[1])
    return peak_rss_kb()


def with_levers_off(model, name: str = 'resnet50', fuse_bn: bool = False, channels_last: bool = False):
    """A copy of our DETR whose backbone is built with the library's levers off (`Backbone(fuse_bn=False,
    channels_last=False)`: a FrozenBatchNorm2d pass after each convolution, NCHW), same weights and trainable flags.
    `fuse_bn`/`channels_last` turn one lever back on (e.g. fused BN in NCHW, to time channels_last alone).
    `build_detr` does not take these flags, so the backbone (`model.backbone[0]`) is rebuilt and swapped in."""
    import copy
    from annotated_detr.backbone import Backbone
    m = copy.deepcopy(model)
    old = m.backbone[0]
    body = old.body
    dil = body.layer4[0].conv2.dilation != (1, 1) if hasattr(body.layer4[0], 'conv3') else False
    new = Backbone(name, train_backbone=True, return_interm_layers=len(body.return_layers) > 1, dilation=dil,
                   weights=None, fuse_bn=fuse_bn, channels_last=channels_last)
    new.load_state_dict(old.state_dict())
    grads = {n: p.requires_grad for n, p in old.named_parameters()}
    for n, p in new.named_parameters(): p.requires_grad_(grads[n])
    new.train(old.training)
    m.backbone[0] = new
    return m


def has_fused_bn(model) -> bool:
    from annotated_detr.speed import ConvWithFrozenBN
    return any(isinstance(mod, ConvWithFrozenBN) for mod in model.modules())


def calibrate_frozen_bn(model, samples):
    """Give a randomly initialized model realistic numerics: in one forward pass (in order), set each frozen
    batch norm's running mean/var to the per-channel statistics of its input, as a trained network's would
    roughly be. Without this a random deep ResNet's activations grow or vanish layer after layer, which
    leads to denormal numbers and timings that say nothing about a real model. A model with the library's
    fused batch norms (applied inside the convolution, where no hook sees the BN's input) is calibrated
    through a levers-off copy whose statistics are then loaded back."""
    from torchvision.ops.misc import FrozenBatchNorm2d
    if has_fused_bn(model):
        plain = calibrate_frozen_bn(with_levers_off(model), samples)
        model.load_state_dict(plain.state_dict())
        return model

    def pre(mod, args):
        x = args[0]
        mod.running_mean.copy_(x.mean((0, 2, 3)))
        mod.running_var.copy_(x.var((0, 2, 3)) + 1e-3)
    hooks = [m.register_forward_pre_hook(pre) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    try:
        with torch.no_grad(): model(samples)
    finally:
        for h in hooks: h.remove()
    return model


def ours_to_hf_state_dict(sd: dict) -> dict:
    "Rename (and split q/k/v of) our checkpoint-named state dict into transformers' DetrForObjectDetection names."
    import re
    out = {}
    bn = {'weight', 'bias', 'running_mean', 'running_var'}
    for k, v in sd.items():
        if k.endswith('num_batches_tracked'): continue
        m = re.match(r'backbone\.0\.body\.(.*)', k)
        if m:
            r = m.group(1)
            p = 'model.backbone.model.'
            r2 = re.sub(r'^conv1\.', 'embedder.embedder.convolution.', r)
            r2 = re.sub(r'^bn1\.', 'embedder.embedder.normalization.', r2)
            r2 = re.sub(r'^layer(\d)\.(\d+)\.', lambda g: f'encoder.stages.{int(g.group(1)) - 1}.layers.{g.group(2)}.', r2)
            r2 = re.sub(r'\.downsample\.0\.', '.shortcut.convolution.', r2)
            r2 = re.sub(r'\.downsample\.1\.', '.shortcut.normalization.', r2)
            r2 = re.sub(r'\.conv(\d)\.', lambda g: f'.layer.{int(g.group(1)) - 1}.convolution.', r2)
            r2 = re.sub(r'\.bn(\d)\.', lambda g: f'.layer.{int(g.group(1)) - 1}.normalization.', r2)
            out[p + r2] = v; continue
        if k.startswith('backbone.1.'): continue   # sine encoding: no parameters
        if k.startswith('input_proj.'): out['model.input_projection.' + k.split('.', 1)[1]] = v; continue
        if k == 'query_embed.weight': out['model.query_position_embeddings.weight'] = v; continue
        if k.startswith('class_embed.'): out['class_labels_classifier.' + k.split('.', 1)[1]] = v; continue
        if k.startswith('bbox_embed.'): out['bbox_predictor.' + k.split('.', 1)[1]] = v; continue
        if k.startswith('transformer.decoder.norm.'): out['model.decoder.layernorm.' + k.rsplit('.', 1)[1]] = v; continue
        m = re.match(r'transformer\.(encoder|decoder)\.layers\.(\d+)\.(.*)', k)
        assert m, k
        part, i, r = m.groups()
        pre = f'model.{part}.layers.{i}.'
        attn = {'self_attn': 'self_attn', 'multihead_attn': 'encoder_attn'}
        a = re.match(r'(self_attn|multihead_attn)\.(in_proj_weight|in_proj_bias|out_proj\.weight|out_proj\.bias)', r)
        if a:
            name, what = attn[a.group(1)], a.group(2)
            if what.startswith('in_proj'):
                kind = 'weight' if what.endswith('weight') else 'bias'
                for t, chunk in zip('qkv', v.chunk(3, 0)): out[f'{pre}{name}.{t}_proj.{kind}'] = chunk
            else: out[f'{pre}{name}.o_proj.{what.split(".")[1]}'] = v
            continue
        norms = ({'norm1': 'self_attn_layer_norm', 'norm2': 'final_layer_norm'} if part == 'encoder' else
                 {'norm1': 'self_attn_layer_norm', 'norm2': 'encoder_attn_layer_norm', 'norm3': 'final_layer_norm'})
        r = re.sub(r'^linear1\.', 'mlp.fc1.', r); r = re.sub(r'^linear2\.', 'mlp.fc2.', r)
        r = re.sub(r'^(norm\d)\.', lambda g: norms[g.group(1)] + '.', r)
        out[pre + r] = v
    return out


def same_weights_pair(shapes=EXAMPLE_SHAPES, aux_loss=True, train=False, calib_seed=1, with_baseline=False):
    """Our DETR-R50 as shipped (default `build_detr`: fused frozen BN, channels_last backbone; random init, frozen
    BN calibrated) and transformers' DETR loaded with the very same weights; with `with_baseline`, also ours with
    the library's levers off (same weights) in the middle: (ours, baseline, theirs)."""
    from annotated_detr.nested_tensor import nested_tensor_from_tensor_list
    torch.manual_seed(0)
    ours = ours_build_detr()(num_classes=91, aux_loss=aux_loss)
    calib = [torch.nn.functional.interpolate(i[None], scale_factor=0.5)[0] for i in random_images(shapes, seed=calib_seed)]
    calibrate_frozen_bn(ours.eval(), nested_tensor_from_tensor_list(calib))
    theirs = hf_detr(num_labels=91, aux_loss=aux_loss)
    missing, unexpected = theirs.load_state_dict(ours_to_hf_state_dict(ours.state_dict()), strict=False)
    if missing or unexpected: raise RuntimeError(f"weight transfer to transformers: missing {missing}, unexpected {unexpected}")
    if with_baseline: return ours.train(train), with_levers_off(ours).train(train), theirs.train(train)
    return ours.train(train), theirs.train(train)
