"""GPU training throughput: DETR-R50, batch 8 at COCO sizes, images/second.

Variants of ours (same weights): the library as shipped (frozen batch norms applied through the conv weights,
channels_last backbone), the same without channels_last (NCHW), and the baseline with both levers off
(`Backbone(fuse_bn=False, channels_last=False)`), each in fp32 and under bf16 autocast; add `--with-hf` for
transformers' DETR in fp32 and bf16, each in NCHW and channels_last, as a reference. One step = forward, matching, loss, backward, clip 0.1, AdamW. Checked in eval mode against the
baseline fp32 path (ours fp32: max |diff| <= 1e-4; bf16: reported, not expected to meet 1e-4). On a machine without CUDA it says so and
exits 0.

Then `detect` at batch 1 on an 800 x 1066 image under bf16 autocast, ms per image: ours eager, ours compiled
(`model.compile(dynamic=True)`, what `build_detr(compile=True)` does) and, with `--with-hf`, transformers (its
image processor, model and post-processing); once end to end from a PIL image, once for the model and the
post-processing alone on the prepared batch. Last, the host-device synchronisations of one epoch of three of our
training steps (`train_one_epoch`, bf16, fused AdamW), counted with `torch.cuda.set_sync_debug_mode('warn')`
and split into those inside the Hungarian matcher and the others, by source line. One JSON line with every
figure is appended to `--jsonl` (bench/results/gpu.jsonl).

    python bench/gpu.py --with-hf  # full run, about 4-6 minutes on an H100/H200
    python bench/gpu.py --quick    # smoke run
    python bench/gpu.py --with-hf --json gpu.json   # figures also written as one JSON file
    python bench/gpu.py --dry-run --with-hf         # the whole script on the CPU at toy sizes (figures mean nothing)
"""
from __future__ import annotations
import argparse, contextlib, copy, datetime, json, platform, sys, time, traceback, warnings
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
    p.add_argument('--cpu-dry-run', '--dry-run', action='store_true', help='exercise the code on CPU at a tiny size (no timing value)')
    p.add_argument('--json', default=None, help='also write the figures to this JSON file')
    p.add_argument('--jsonl', default=None, help='append one JSON line to this file (default bench/results/gpu.jsonl; '
                   'bench/results/gpu_dry_run.jsonl for a dry run)')
    p.add_argument('--skip', nargs='*', default=[], choices=['train', 'detect', 'syncs'], help='parts to leave out')
    p.add_argument('--detect-repeats', type=int, default=20)
    a = p.parse_args()
    if not torch.cuda.is_available() and not a.cpu_dry_run:
        print("bench/gpu.py: no CUDA device available; skipping (run it on a machine with an NVIDIA GPU).")
        return 0
    if a.quick: a.steps, a.warmup, a.batch = 2, 1, 2
    if a.cpu_dry_run: a.steps, a.warmup, a.detect_repeats, a.batch = 1, 1, 2, 2
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
    shapes = (SHAPES * 2)[:a.batch] if not a.cpu_dry_run else [(3, 64, 96), (3, 96, 64)][:a.batch]
    if a.with_hf and not _has_transformers():
        print("transformers is not installed: its rows are skipped (pip install transformers to include them)")
        a.with_hf = False
    ours, base, theirs = _models(a.with_hf)
    nchw = C.with_levers_off(ours, fuse_bn=True, channels_last=False)   # ours without channels_last alone
    if theirs is not None:
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
    if 'train' in a.skip: variants = {}
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
    for k, v in results.items():
        if 'ours fp32' in results: print(f"  speed-up {k} vs ours fp32: {v / results['ours fp32']:.2f}x")
    figures = {'device': torch.cuda.get_device_name() if cuda else 'cpu (dry run)', 'torch': torch.__version__,
               'batch': a.batch, 'padded': list(samples.tensors.shape), 'steps': a.steps, 'tf32': a.tf32,
               'check_fp32_max_box_diff': d_fast, 'check_bf16_max_box_diff': d_bf, 'variants': rows}
    if 'detect' not in a.skip: figures['detect'] = bench_detect(ours, theirs, dev, a.detect_repeats)
    if 'syncs' not in a.skip: figures['syncs'] = count_syncs(ours, samples, targets, dev)
    if a.json: Path(a.json).write_text(json.dumps(figures, indent=1, default=float))
    line = {'command': 'python ' + ' '.join(sys.argv), 'machine': _machine(cuda), 'torch': torch.__version__,
            'date': datetime.datetime.now().isoformat(timespec='seconds'), 'dry_run': a.cpu_dry_run, 'figures': figures}
    out = Path(a.jsonl or Path(__file__).resolve().parent / 'results' / ('gpu_dry_run.jsonl' if a.cpu_dry_run else 'gpu.jsonl'))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, 'a') as f: f.write(json.dumps(line, default=float) + '\n')
    print(f"appended one line to {out}")
    return 0


def _has_transformers() -> bool:
    try: import transformers  # noqa: F401
    except ImportError: return False
    return True


def _machine(cuda: bool) -> str:
    "The GPU (if any), the CPU model and its cores, Python."
    import _common as C
    gpu = f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}); " if cuda else ''
    return f"{gpu}{C.machine()}; Python {platform.python_version()}"


def _models(with_hf: bool):
    "(ours, ours baseline, transformers' or None): DETR-R50 with the same random weights, frozen BN calibrated."
    import _common as C
    if with_hf: return C.same_weights_pair(aux_loss=True, train=True, with_baseline=True)
    from annotated_detr.transformer import build_detr
    from annotated_detr.nested_tensor import nested_tensor_from_tensor_list
    torch.manual_seed(0)
    ours = build_detr(num_classes=91, aux_loss=True)
    calib = [torch.nn.functional.interpolate(i[None], scale_factor=0.5)[0] for i in C.random_images(C.EXAMPLE_SHAPES, seed=1)]
    C.calibrate_frozen_bn(ours.eval(), nested_tensor_from_tensor_list(calib))
    return ours.train(), C.with_levers_off(ours).train(), None


def _timed(fns: dict, repeats: int, sync) -> dict:
    "Median ms per call of each callable (alternating, after two warm-up calls each; the device synchronised per call)."
    import statistics
    def call(f): f(); sync()
    for f in fns.values(): call(f); call(f)
    ts = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t0 = time.perf_counter(); call(fns[k]); ts[k].append((time.perf_counter() - t0) * 1000)
    return {k: round(statistics.median(v), 2) for k, v in ts.items()}


def bench_detect(ours, theirs, dev, repeats: int) -> dict:
    "`detect` at batch 1, bf16 autocast, ms per image: ours eager and compiled, transformers'; end to end and model only."
    from PIL import Image
    from annotated_detr.inference import detect
    from annotated_detr.data import make_coco_transforms
    from annotated_detr.nested_tensor import nested_tensor_from_tensor_list
    from annotated_detr.matcher_loss import PostProcess
    cuda, dry = dev.type == 'cuda', dev.type != 'cuda'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    H, W = (800, 1066) if not dry else (64, 96)
    g = torch.Generator().manual_seed(0)
    photo = Image.fromarray((torch.rand(H, W, 3, generator=g) * 255).byte().numpy())   # at the evaluation size already
    transform = make_coco_transforms('val', scales=[H], max_size=max(1333, W))
    eager = copy.deepcopy(ours).to(dev).eval()
    compiled = copy.deepcopy(ours).to(dev).eval()
    backend = 'inductor' if not dry else 'aot_eager'   # a dry run only traces: Inductor on a 2-core CPU takes minutes
    compiled.compile(dynamic=True, backend=backend)
    bf16 = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if not dry else contextlib.nullcontext   # CPU bf16: emulated, slow
    from annotated_detr.data import coco_to_target
    # one plain [3, H, W] tensor in a list of one, under no_grad, as detect hands it over: the compiled model traces
    # one graph for all three uses below (another input form, grad mode or autocast state would compile again)
    img = transform(photo, coco_to_target([], 0, photo.size))[0].as_subclass(torch.Tensor).to(dev)
    sizes = torch.tensor([[H, W]], device=dev)
    print(f"detect: batch 1, image {H} x {W}, {'bf16 autocast' if not dry else 'float32 (dry run)'}, {backend} for the compiled model")
    t0 = time.perf_counter()
    with torch.no_grad(), bf16(): compiled([img]); sync()
    compile_s = time.perf_counter() - t0
    with torch.no_grad(), bf16():
        d16 = (compiled([img])['pred_boxes'].float() - eager([img])['pred_boxes'].float()).abs().max().item()
    print(f"  compiling call {compile_s:.1f} s; compiled vs eager max |box diff| {d16:.1e} "
          f"(float32 equality to 1e-4 is checked on the CPU, appendix speed)")
    def ours_detect(m):
        def run():
            with bf16(): return detect(m, photo, threshold=0.7, transform=transform)
        return run
    def ours_model(m):
        def run():
            with torch.no_grad(), bf16(): return PostProcess()(m([img]), sizes)
        return run
    e2e = {'ours eager': ours_detect(eager), 'ours compiled': ours_detect(compiled)}
    model_only = {'ours eager': ours_model(eager), 'ours compiled': ours_model(compiled)}
    if theirs is not None:
        from transformers import DetrImageProcessor
        proc = DetrImageProcessor()   # DETR's defaults: shorter side 800, longer side <= 1333, ImageNet normalisation
        hf = copy.deepcopy(theirs).to(dev).eval()
        enc = {k: v.to(dev) for k, v in proc(images=photo, return_tensors='pt').items()}
        def hf_detect():
            with torch.no_grad(), bf16():
                e = {k: v.to(dev) for k, v in proc(images=photo, return_tensors='pt').items()}
                return proc.post_process_object_detection(hf(**e), threshold=0.7, target_sizes=[(H, W)])
        def hf_model():
            with torch.no_grad(), bf16():
                return proc.post_process_object_detection(hf(**enc), threshold=0.7, target_sizes=[(H, W)])
        e2e['transformers'], model_only['transformers'] = hf_detect, hf_model
    r = {'image': [H, W], 'compile_backend': backend, 'compile_s': round(compile_s, 1), 'compiled_vs_eager_bf16_boxes': d16,
         'ms_per_image_detect': _timed(e2e, repeats, sync),
         'ms_per_image_model_postprocess': _timed(model_only, repeats, sync)}
    for what in ('ms_per_image_detect', 'ms_per_image_model_postprocess'):
        print(f"  {what}: " + ', '.join(f"{k} {v:.1f}" for k, v in r[what].items()))
    return r


def count_syncs(ours, samples, targets, dev, steps: int = 3) -> dict:
    "Host-device synchronisations in one epoch of `steps` training steps of ours (bf16, the batch moved from the CPU each step), inside the matcher and elsewhere."
    from annotated_detr.train import train_one_epoch, make_optimizer
    from annotated_detr.matcher_loss import build_criterion
    cuda = dev.type == 'cuda'
    model = copy.deepcopy(ours).to(dev).train()
    crit = build_criterion(num_classes=91).to(dev)
    opt = make_optimizer(model, 1e-4, 1e-5, 1e-4)
    amp = 'bf16' if cuda else False
    train_one_epoch(model, crit, [(samples, targets)], opt, dev, epoch=0, max_norm=0.1, amp=amp)   # warm-up
    depth, inside, outside = [0], [0], []
    matcher_forward = crit.matcher.forward
    def counted_forward(*args, **kw):
        depth[0] += 1
        try: return matcher_forward(*args, **kw)
        finally: depth[0] -= 1
    crit.matcher.forward = counted_forward
    def where() -> str:   # the innermost line of the package on the stack, else of this script outside the counting
        stack = [fr for fr in traceback.extract_stack() if fr.name not in ('where', 'seen', 'show', '__torch_function__')]
        for fr in reversed(stack):
            if 'annotated_detr' in fr.filename: return f"{Path(fr.filename).name}:{fr.lineno} {fr.name}"
        fr = stack[-1]
        return f"{Path(fr.filename).name}:{fr.lineno} {fr.name}"
    def seen():
        if depth[0]: inside[0] += 1
        else: outside.append(where())
    cpu_batch = (samples.to('cpu'), [{k: v.cpu() for k, v in t.items()} for t in targets])   # as a DataLoader yields it
    loader = [cpu_batch] * steps
    if cuda:
        with warnings.catch_warnings():
            warnings.simplefilter('always')
            shown = warnings.showwarning
            def show(message, category, filename, lineno, file=None, line=None):
                if 'synchroniz' in str(message): seen()
                else: shown(message, category, filename, lineno, file, line)
            warnings.showwarning = show
            torch.cuda.synchronize(); torch.cuda.set_sync_debug_mode('warn')
            try: train_one_epoch(model, crit, loader, opt, dev, epoch=1, max_norm=0.1, amp=amp, check_every=10**6)
            finally: torch.cuda.set_sync_debug_mode(0)
        how = "torch.cuda.set_sync_debug_mode('warn')"
    else:   # no CUDA: count the calls that would synchronise (item, tolist, cpu, ...) with a TorchFunctionMode
        from torch.overrides import TorchFunctionMode
        class Reads(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if getattr(func, '__name__', '') in {'item', 'tolist', 'cpu', 'numpy', '__bool__', '__float__', '__int__',
                                                     '__index__', 'nonzero'}: seen()
                return func(*args, **(kwargs or {}))
        with Reads(): train_one_epoch(model, crit, loader, opt, dev, epoch=1, max_norm=0.1, amp=amp, check_every=10**6)
        how = 'TorchFunctionMode (CPU: reads of tensor values; no CUDA here)'
    from collections import Counter
    r = {'how': how, 'steps': steps, 'decoder_layers': 6, 'inside_matcher': inside[0],
         'inside_matcher_per_step': inside[0] / steps, 'outside_matcher': len(outside),
         'outside_by_line': dict(Counter(outside))}
    print(f"host-device syncs in {steps} training steps (one epoch, {how}): {inside[0]} inside the matcher "
          f"({inside[0] / steps:.0f} per step, 6 decoder layers), {len(outside)} elsewhere: {dict(Counter(outside))}")
    return r


if __name__ == '__main__':
    sys.exit(main())
