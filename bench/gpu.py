"""GPU training throughput: DETR-R50, batch 8 at COCO sizes, images/second.

Variants of ours (same weights): the library as shipped (frozen batch norms applied through the conv weights,
channels_last backbone), the same without channels_last (NCHW), and the baseline with both levers off
(`Backbone(fuse_bn=False, channels_last=False)`), each in fp32 and under bf16 autocast; add `--with-hf` for
transformers' DETR in fp32 and bf16, each in NCHW and channels_last, as a reference. One step = forward, matching, loss, backward, clip 0.1, AdamW. Checked in eval mode against the
baseline fp32 path (ours fp32: max |diff| <= 1e-4; bf16: reported, not expected to meet 1e-4). On a machine without CUDA it says so and
exits 0.

    python bench/gpu.py            # full run
    python bench/gpu.py --quick    # smoke run
    python bench/gpu.py --with-hf --json gpu.json   # also transformers; figures also written as JSON
"""
from __future__ import annotations
import argparse, contextlib, copy, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

# eight COCO-like images after the evaluation resize (shorter side 800, longer side <= 1333)
SHAPES = [(3, 800, 1066), (3, 800, 1200), (3, 800, 1199), (3, 1066, 800), (3, 800, 1202), (3, 800, 1333),
          (3, 800, 1066), (3, 1200, 800)]


def _to_float(out):
    "Model outputs (and aux outputs) as float32."
    r = {k: v.float() for k, v in out.items() if k != 'aux_outputs'}
    if 'aux_outputs' in out: r['aux_outputs'] = [{k: v.float() for k, v in a.items()} for a in out['aux_outputs']]
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='batch 2, 2 timed steps')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--with-hf', action='store_true', help="also time transformers' DETR (fp32, bf16)")
    p.add_argument('--tf32', action='store_true', help='allow TF32 in fp32 matmuls/convs (off by default)')
    p.add_argument('--cpu-dry-run', action='store_true', help='exercise the code on CPU at a tiny size (no timing value)')
    p.add_argument('--json', default=None, help='also write the figures to this JSON file')
    a = p.parse_args()
    if not torch.cuda.is_available() and not a.cpu_dry_run:
        print("bench/gpu.py: no CUDA device available; skipping (run it on a machine with an NVIDIA GPU).")
        return 0
    if a.quick: a.steps, a.warmup, a.batch = 2, 1, 2
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32
    torch.backends.cudnn.benchmark = True
    import _common as C
    from train_step import make_targets, param_groups, optimizer_step, LR, WD
    from annotated_detr.nested_tensor import nested_tensor_from_tensor_list
    from annotated_detr.matcher_loss import build_criterion
    dev = torch.device('cpu' if a.cpu_dry_run else 'cuda')
    cuda = dev.type == 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    shapes = (SHAPES * 2)[:a.batch] if not a.cpu_dry_run else [(3, 160, 224), (3, 192, 160)][:a.batch]
    ours, base, theirs = C.same_weights_pair(aux_loss=True, train=True, with_baseline=True)
    nchw = C.with_levers_off(ours, fuse_bn=True, channels_last=False)   # ours without channels_last alone
    for n, q in theirs.named_parameters():
        if 'backbone' in n and any(f'stages.{i}.' in n for i in (1, 2, 3)): q.requires_grad_(True)
    samples = nested_tensor_from_tensor_list(C.random_images(shapes)).to(dev)
    targets = [{k: v.to(dev) for k, v in t.items()} for t in make_targets(counts=tuple(3 + i % 6 for i in range(len(shapes))))]
    print(f"device: {torch.cuda.get_device_name() if cuda else 'CPU (dry run)'}, torch {torch.__version__}, TF32 {'on' if a.tf32 else 'off'}")
    print(f"batch {a.batch} padded to {list(samples.tensors.shape)}")

    def make(model, bf16, impl='ours', cl=False):
        model = copy.deepcopy(model).to(dev).train()
        x = samples.tensors
        if cl:   # transformers' model with its convolutions and the input in NHWC
            from _levers import channels_last
            model, x = channels_last(model), x.contiguous(memory_format=torch.channels_last)
        mask = samples.mask
        opt = torch.optim.AdamW(param_groups(model, 'backbone'), lr=LR, weight_decay=WD, fused=True)
        ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        if impl == 'ours':
            crit = build_criterion(num_classes=91).to(dev)
            from annotated_detr.nested_tensor import NestedTensor
            def loss_fn():
                with ctx():
                    out = model(NestedTensor(x, mask))
                out = _to_float(out)      # the matcher and the loss in fp32 (cdist has no bf16 kernel)
                ld = crit(out, targets)
                return sum(ld[k] * w for k, w in crit.weight_dict.items() if k in ld)
        else:
            pm = (~mask).long()
            labels = [{'class_labels': t['labels'], 'boxes': t['boxes']} for t in targets]
            def loss_fn():
                with ctx():
                    return model(pixel_values=x, pixel_mask=pm, labels=labels).loss

        step = optimizer_step(loss_fn, model, opt)
        step.model, step.x = model, x
        return step

    variants = {'ours fp32': (ours, False, 'ours', False), 'ours NCHW fp32': (nchw, False, 'ours', False),
                'ours baseline fp32': (base, False, 'ours', False),
                'ours bf16': (ours, True, 'ours', False), 'ours NCHW bf16': (nchw, True, 'ours', False),
                'ours baseline bf16': (base, True, 'ours', False)}
    if a.with_hf:
        variants.update({'transformers fp32': (theirs, False, 'theirs', False),
                         'transformers channels_last fp32': (theirs, False, 'theirs', True),
                         'transformers bf16': (theirs, True, 'theirs', False),
                         'transformers channels_last bf16': (theirs, True, 'theirs', True)})
    # correctness of the fast paths (eval mode, no dropout)
    from annotated_detr.nested_tensor import NestedTensor
    ref_model = copy.deepcopy(base).to(dev).eval()
    fast_model = copy.deepcopy(ours).to(dev).eval()
    with torch.no_grad():
        ref = ref_model(samples)
        out_fast = fast_model(NestedTensor(samples.tensors, samples.mask))
        with torch.autocast(dev.type, dtype=torch.bfloat16): out_bf = fast_model(samples)
    d_fast = (ref['pred_boxes'] - out_fast['pred_boxes']).abs().max().item()
    d_bf = (ref['pred_boxes'] - out_bf['pred_boxes'].float()).abs().max().item()
    print(f"check: ours fp32 vs baseline fp32 max |box diff| {d_fast:.1e} ({'OK' if d_fast <= 1e-4 else 'FAIL'}); "
          f"ours bf16 vs baseline fp32 max |box diff| {d_bf:.1e} (expected ~1e-2)")
    del ref_model, fast_model
    results, rows = {}, []
    for name, (m, bf16, impl, cl) in variants.items():
        step = make(m, bf16, impl, cl)
        for _ in range(a.warmup): step()
        sync()
        if cuda: torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.steps): loss = step()
        sync()
        dt = (time.perf_counter() - t0) / a.steps
        results[name] = a.batch / dt
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float('nan')
        rows.append({'variant': name, 'images_per_s': round(results[name], 2), 'ms_per_step': round(dt * 1000, 1),
                     'loss': round(loss.item(), 4), 'peak_gib': round(peak, 2)})
        print(f"  {name:>32s}: {results[name]:7.2f} images/s  ({dt * 1000:.0f} ms/step, loss {loss.item():.3f}, "
              f"peak {peak:.1f} GiB)")
        del step
        if cuda: torch.cuda.empty_cache()
    base = results['ours fp32']
    for k, v in results.items(): print(f"  speed-up {k} vs ours fp32: {v / base:.2f}x")
    if a.json:
        import json
        Path(a.json).write_text(json.dumps({
            'device': torch.cuda.get_device_name() if cuda else 'cpu (dry run)', 'torch': torch.__version__,
            'batch': a.batch, 'padded': list(samples.tensors.shape), 'steps': a.steps, 'tf32': a.tf32,
            'check_fp32_max_box_diff': d_fast, 'check_bf16_max_box_diff': d_bf, 'variants': rows}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
