"""Training-step benchmark: DETR-R50, batch 2 at the evaluation size of two COCO images, CPU.

One step = forward, Hungarian matching, loss (with the 5 auxiliary decoder losses), backward, gradient
clipping at 0.1, AdamW step (lr 1e-4, backbone 1e-5, weight decay 1e-4), dropout 0.1 on.
Ours: `build_detr` as shipped (frozen batch norms applied through the convolution weights, channels_last
backbone) + `build_criterion`; `ours baseline`: the same weights with the library's levers off
(`Backbone(fuse_bn=False, channels_last=False)`). Theirs: HuggingFace `DetrForObjectDetection` (same architecture,
random weights, `auxiliary_loss=True`) with its own matcher and loss via `labels=[{'class_labels', 'boxes'}]`.

The same work on both sides: transformers as shipped freezes every backbone parameter (its filter looks
for 'stage.1' in names that read 'stages.1'), while DETR trains layer2..layer4; by default we unfreeze
transformers' stages 1..3 so both train the same 41,302,368 parameters (`--hf-as-shipped` keeps its
freezing). Images [3, 800, 1066] and [3, 800, 1200] (padded to 800 x 1200), 4 and 7 targets.

    python bench/train_step.py            # full run (timings + peak memory in subprocesses)
    python bench/train_step.py --quick    # smoke run
    python bench/train_step.py --profile ours    # where one step of ours spends its time (or: theirs)
    python bench/train_step.py --compile --no-mem    # also both models under torch.compile
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import torch  # noqa: E402

GOAL = 0.7
OURS, BASE, THEIRS = 'ours', 'ours baseline (levers off)', 'transformers'
LR, LR_BACKBONE, WD, CLIP = 1e-4, 1e-5, 1e-4, 0.1
FUSED_ADAMW = False   # --fused-adamw: both sides use torch's fused AdamW kernel


def make_targets(seed=0, counts=(4, 7)):
    "A few random targets per image: labels in 1..90, boxes normalized (cx, cy, w, h) inside the image."
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        wh = 0.05 + 0.35 * torch.rand(n, 2, generator=g)
        c = wh / 2 + (1 - wh) * torch.rand(n, 2, generator=g)
        out.append({'labels': torch.randint(1, 91, (n,), generator=g), 'boxes': torch.cat([c, wh], 1)})
    return out


def param_groups(model, backbone_key):
    bb = [p for n, p in model.named_parameters() if backbone_key in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if backbone_key not in n and p.requires_grad]
    return [{'params': rest, 'lr': LR}, {'params': bb, 'lr': LR_BACKBONE}]


def make_step(model, impl='ours', compile=False):
    "A no-argument callable doing one training step of `model` (a private copy, with its own AdamW)."
    import copy
    from annotated_detr.nested_tensor import NestedTensor
    from annotated_detr.matcher_loss import build_criterion
    model = copy.deepcopy(model).train()
    fwd = torch.compile(model) if compile else model   # shares the parameters; compiles at the first call
    x, mask = C.pad_batch(C.random_images(C.COCO_SHAPES))
    targets = make_targets()
    xx = lambda: x
    opt = torch.optim.AdamW(param_groups(model, 'backbone'), lr=LR, weight_decay=WD, fused=FUSED_ADAMW or None)
    if impl == 'theirs':
        pixel_mask = (~mask).long()
        labels = [{'class_labels': t['labels'], 'boxes': t['boxes']} for t in targets]
        def loss_fn(): return fwd(pixel_values=xx(), pixel_mask=pixel_mask, labels=labels).loss
    else:
        criterion = build_criterion(num_classes=91).train()
        def loss_fn():
            ld = criterion(fwd(NestedTensor(xx(), mask)), targets)
            return sum(ld[k] * w for k, w in criterion.weight_dict.items() if k in ld)

    step = optimizer_step(loss_fn, model, opt)
    step.model = model
    return step


def optimizer_step(loss_fn, model, opt, clip=CLIP):
    "A no-argument training step: loss, zero_grad, backward, gradient clipping, optimizer step; returns the detached loss."
    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss.detach()
    return step


def check_compiled(ours):
    "torch.compile must not change the outputs: eval mode (no dropout), same input, max |diff| <= 1e-4."
    import copy
    from annotated_detr.nested_tensor import NestedTensor
    m = copy.deepcopy(ours).eval()
    x, mask = C.pad_batch(C.random_images(C.COCO_SHAPES))
    with torch.no_grad():
        ref, got = m(NestedTensor(x, mask)), torch.compile(m)(NestedTensor(x, mask))
    d = max((ref[k] - got[k]).abs().max().item() for k in ('pred_logits', 'pred_boxes'))
    print(f"check: ours + compile vs ours, eval mode: max |diff| = {d:.1e} -> {'OK' if d <= 1e-4 else 'FAIL'}")
    if d > 1e-4: raise SystemExit("torch.compile changed the outputs by more than 1e-4")


def models(as_shipped=False):
    "Ours, ours baseline and transformers' DETR-R50 with identical (calibrated random) weights and the same trainable parameters."
    ours, base, theirs = C.same_weights_pair(aux_loss=True, train=True, with_baseline=True)
    if not as_shipped:   # train layer2..4 (transformers' stages 1..3) like DETR
        for n, p in theirs.named_parameters():
            if 'backbone' in n and any(f'stages.{i}.' in n for i in (1, 2, 3)): p.requires_grad_(True)
    return ours, base, theirs


def n_trainable(m): return sum(p.numel() for p in m.parameters() if p.requires_grad)


def mem_main(impl, threads, as_shipped):
    torch.set_num_threads(threads)
    ours, base, theirs = models(as_shipped)
    model = {'ours': ours, 'ours_baseline': base, 'theirs': theirs}[impl]
    step = make_step(model, 'theirs' if impl == 'theirs' else 'ours')
    del ours, base, theirs, model
    print('MEM ' + json.dumps(C.measure_peak(step, repeats=2)))


def check_fast_matches_plain():
    """One step (dropout off) of the baseline ('plain', levers off) in fp32, ours as shipped ('fast') in fp32 and
    the baseline in float64 from the same weights at a small size.
    Returns |loss fast - loss plain| and the gradient error (norm over all parameters, relative) of plain
    and of fast against float64: fp32 gradients of a 50-layer net differ from any reordered sum at ~1e-3,
    so the fair test is that the fast path is no less accurate than the plain one."""
    import copy
    from annotated_detr.nested_tensor import NestedTensor
    from annotated_detr.matcher_loss import build_criterion
    fast, plain, _ = models()
    for m in [*plain.modules(), *fast.modules()]:
        if isinstance(m, torch.nn.Dropout): m.p = 0.0
        if hasattr(m, 'dropout') and isinstance(m.dropout, float): m.dropout = 0.0
    crit = build_criterion(num_classes=91)
    x, mask = C.pad_batch(C.random_images([(3, 256, 320), (3, 224, 288)]))
    targets = make_targets()
    res = {}
    for v in ['plain', 'fast', 'f64']:
        m, xx, tg, cr = copy.deepcopy(fast if v == 'fast' else plain), x, targets, crit
        if v == 'f64':
            m, xx, cr = m.double(), x.double(), copy.deepcopy(crit).double()
            tg = [{'labels': t['labels'], 'boxes': t['boxes'].double()} for t in targets]
        ld = cr(m(NestedTensor(xx, mask)), tg)
        loss = sum(ld[k] * w for k, w in crit.weight_dict.items() if k in ld)
        loss.backward()
        res[v] = (loss.item(), torch.cat([p.grad.double().flatten() for p in m.parameters() if p.grad is not None]))
    g64 = res['f64'][1]
    err = {v: ((res[v][1] - g64).norm() / g64.norm()).item() for v in ['plain', 'fast']}
    return abs(res['fast'][0] - res['plain'][0]), err['plain'], err['fast']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='2 repeats, no memory subprocesses')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--hf-as-shipped', action='store_true', help="keep transformers' backbone fully frozen")
    p.add_argument('--no-mem', action='store_true')
    p.add_argument('--fused-adamw', action='store_true', help='AdamW(fused=True) for both (transformers Trainer default)')
    p.add_argument('--mem', choices=['ours', 'ours_baseline', 'theirs'], help=argparse.SUPPRESS)
    p.add_argument('--profile', choices=['ours', 'theirs'], help='only print torch.profiler\'s top operators over one step')
    p.add_argument('--compile', action='store_true', help='also time both models under torch.compile (inductor; compiles ~1 min each)')
    a = p.parse_args()
    global FUSED_ADAMW
    FUSED_ADAMW = a.fused_adamw
    if a.mem: return mem_main(a.mem, a.threads, a.hf_as_shipped)
    if a.quick: a.repeats, a.no_mem = 2, True
    torch.set_num_threads(a.threads)
    print(f"machine: {C.machine()}")
    dl, ep, ef = check_fast_matches_plain()
    ok = dl <= 1e-4 and ef <= 2 * ep + 1e-6
    print(f"check: ours (as shipped) vs baseline (levers off), one step at a small size: |loss diff| {dl:.1e}; "
          f"gradient error vs float64: baseline {ep:.1e}, ours {ef:.1e} -> {'OK' if ok else 'FAIL'}")
    if not ok: raise SystemExit("ours differs from the baseline path by more than 1e-4")
    ours, base, theirs = models(a.hf_as_shipped)
    if a.profile:
        step = make_step(ours if a.profile == 'ours' else theirs, a.profile)
        step(); step()                                           # warm up, optimizer state allocated
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CPU]) as prof: step()
        return print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=20, max_name_column_width=50))
    fns = {OURS: make_step(ours), BASE: make_step(base), THEIRS: make_step(theirs, 'theirs')}
    if a.compile:
        fns[OURS + ' + compile'] = make_step(ours, compile=True)
        fns[THEIRS + ' + compile'] = make_step(theirs, 'theirs', compile=True)
        check_compiled(ours)
    print(f"trainable params: ours {n_trainable(ours):,}  baseline {n_trainable(base):,}  transformers {n_trainable(theirs):,}"
          f"{' (as shipped)' if a.hf_as_shipped else ''}")
    del ours, base, theirs
    print(f"input: {[list(s) for s in C.COCO_SHAPES]} padded to {list(C.pad_batch(C.random_images(C.COCO_SHAPES))[0].shape)}, "
          f"targets {[len(t['labels']) for t in make_targets()]}")
    print(f"load before: {C.loadavg()}")
    t = C.interleaved(fns, a.repeats, warmup=1)
    print(f"load after:  {C.loadavg()}")
    print("training step, seconds:")
    C.report_ratio(t, OURS, THEIRS, GOAL)
    C.report_ratio(t, BASE, THEIRS, show=False)
    C.report_ratio(t, OURS, BASE, show=False)
    if a.compile:
        C.report_ratio(t, OURS + ' + compile', THEIRS, show=False)
        C.report_ratio(t, OURS + ' + compile', THEIRS + ' + compile', show=False)
        C.report_ratio(t, OURS + ' + compile', OURS, show=False)
    if not a.no_mem:
        print("peak RSS above the RSS before the step (separate process each; first step incl. optimizer state / later step):")
        extra = (['--threads', str(a.threads)] + (['--hf-as-shipped'] if a.hf_as_shipped else [])
                 + (['--fused-adamw'] if a.fused_adamw else []))
        for impl in ['ours', 'ours_baseline', 'theirs']:
            r = C.peak_in_subprocess(__file__, impl, extra)
            print(f"  {impl:>13s}: first {r['first_call_mib']:.0f} MiB, steady {r['steady_mib']:.0f} MiB "
                  f"(RSS before {r['rss_before_mib']:.0f} MiB, process peak {r['peak_total_mib']:.0f} MiB)")


if __name__ == '__main__':
    main()
