"""Exported DETR-R50 under ONNX Runtime against our eager model and transformers' eager model, CPU.

The model is ours as shipped (`build_detr()`, random init with calibrated frozen batch norms, see _common), exported
with `annotated_detr.export.export_onnx` (batch norms folded into the convolutions, opset 18, dynamic batch/height/
width); transformers' `DetrForObjectDetection` gets the very same weights. All three get the two running-example
images padded to `[2, 3, 765, 911]` and their mask, with 2 threads (torch.set_num_threads and ONNX Runtime's
intra-op threads), in one process, alternating after a warmup; the ratio is of medians. ONNX Runtime's outputs are
checked against our eager outputs (max |diff| <= 1e-4) before timing. Peak memory: each implementation in its own
process (first call / steady state, RSS above the RSS before the call).

Variants of the ONNX Runtime run (`--also`): graph optimization levels 'basic' and 'all' besides the library's
default 'extended', and 'nofold' (an export that keeps each batch norm as operations on the convolution weights).
`--profile` runs ONNX Runtime's profiler over one call and prints where the time goes, by operator type.

    python bench/export.py            # full run
    python bench/export.py --quick    # smoke run: 2 repeats, no memory subprocesses
"""
from __future__ import annotations
import argparse, json, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import torch  # noqa: E402

GOAL = 0.8
OURS, THEIRS, ORT = 'ours (eager)', 'transformers (eager)', 'onnxruntime'


def example_batch():
    "The two running-example images (random pixels) padded together: (images [2, 3, 765, 911], mask)."
    return C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))


def export(model, path, fold_bn=True):
    from annotated_detr.export import export_onnx
    export_onnx(model.eval(), path, fold_bn=fold_bn)
    return path


def ort_runner(path, threads, optimization='extended', profile=None):
    "A no-argument callable running the ONNX Runtime session on the example batch, returning outputs as a dict."
    from annotated_detr.export import onnx_session, OUTPUT_NAMES
    s = onnx_session(path, threads=threads, optimization=optimization, profile=profile)
    x, mask = example_batch()
    feed = {'images': x.numpy(), 'mask': mask.numpy()}
    def run():
        logits, boxes = s.run(list(OUTPUT_NAMES), feed)
        return {'pred_logits': torch.from_numpy(logits), 'pred_boxes': torch.from_numpy(boxes)}
    run.session = s
    return run


def torch_runner(model, impl):
    from annotated_detr.nested_tensor import NestedTensor
    x, mask = example_batch()
    if impl == 'theirs': return lambda: model(pixel_values=x, pixel_mask=(~mask).long())
    return lambda: model(NestedTensor(x, mask))


def max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in ('pred_logits', 'pred_boxes'))


def mem_main(impl, threads, onnx_path):
    "Child process: peak RSS of one implementation during inference, as a JSON line."
    torch.set_num_threads(threads)
    if impl == 'ort':
        run = ort_runner(onnx_path, threads)
    else:
        ours, theirs = C.same_weights_pair(aux_loss=False)
        model = ours if impl == 'ours' else theirs
        del ours, theirs
        run = torch_runner(model, impl)
    with torch.inference_mode():
        r = C.measure_peak(run, repeats=2)
    print('MEM ' + json.dumps(r))


def profile_summary(run, top=12):
    "Run once under ONNX Runtime's profiler; print the time by operator type (from its JSON trace)."
    run()
    prof = run.session.end_profiling()
    events = json.load(open(prof))
    by_op, total = {}, 0
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            op = e['args'].get('op_name', '?')
            by_op[op] = by_op.get(op, 0) + e['dur']; total += e['dur']
    print(f"ONNX Runtime profile of one call ({total / 1e6:.2f} s in kernels), by operator type:")
    for op, us in sorted(by_op.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {op:>28s}: {us / 1e6:6.3f} s  {100 * us / total:5.1f} %")
    Path(prof).unlink()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='2 repeats, no memory subprocesses')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--also', default='', help="more ONNX Runtime variants, comma-separated: basic, all (optimization levels), nofold")
    p.add_argument('--profile', action='store_true', help="print ONNX Runtime's profile of one call by operator type")
    p.add_argument('--no-mem', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--onnx', default=None, help='the exported file to use (exported there if missing); default: a temporary file')
    p.add_argument('--mem', choices=['ours', 'theirs', 'ort'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mem: return mem_main(a.mem, a.threads, a.onnx)
    if a.quick: a.repeats, a.no_mem = 2, True
    torch.set_num_threads(a.threads)
    also = [v for v in a.also.split(',') if v]

    ours, theirs = C.same_weights_pair(aux_loss=False)   # identical weights, frozen BN calibrated, eval mode
    tmp = Path(tempfile.mkdtemp())
    path = Path(a.onnx) if a.onnx else tmp / 'detr_r50.onnx'
    if not path.exists():
        import time
        t0 = time.perf_counter(); export(ours, path); t_export = time.perf_counter() - t0
        print(f"exported {path} ({path.stat().st_size / 2**20:.0f} MiB) in {t_export:.0f} s")
    fns = {OURS: torch_runner(ours, 'ours'), THEIRS: torch_runner(theirs, 'theirs'), ORT: ort_runner(path, a.threads)}
    for v in also:
        if v in ('basic', 'all'): fns[f'{ORT} opt={v}'] = ort_runner(path, a.threads, optimization=v)
        elif v == 'nofold': fns[f'{ORT} nofold'] = ort_runner(export(ours, tmp / 'nofold.onnx', fold_bn=False), a.threads)
        else: raise SystemExit(f"unknown variant {v!r}")
    print(f"machine: {C.machine()}")
    with torch.inference_mode():
        ref, hf = fns[OURS](), fns[THEIRS]()
        dh = max((ref['pred_logits'] - hf.logits).abs().max().item(), (ref['pred_boxes'] - hf.pred_boxes).abs().max().item())
        print(f"check: ours vs transformers with the same weights: max |diff| = {dh:.2e} -> {'OK' if dh <= 1e-4 else 'FAIL'}")
        for k, f in fns.items():
            if not k.startswith(ORT): continue
            d = max_diff(ref, f())
            print(f"check: {k} vs ours: max |diff| = {d:.2e} (logits, boxes) -> {'OK' if d <= 1e-4 else 'FAIL'}")
            if d > 1e-4: raise SystemExit(f"{k} differs from eager PyTorch by more than 1e-4")
        print(f"input: batch {[list(s) for s in C.EXAMPLE_SHAPES]} padded to {list(example_batch()[0].shape)}")
        print(f"load before: {C.loadavg()}")
        t = C.interleaved(fns, a.repeats, warmup=1)
        print(f"load after:  {C.loadavg()}")
    print("inference, seconds per batch of 2:")
    C.report_ratio(t, ORT, OURS, GOAL)
    C.report_ratio(t, ORT, THEIRS, show=False)
    C.report_ratio(t, OURS, THEIRS, show=False)
    for k in fns:
        if k.startswith(ORT + ' '): C.report_ratio(t, k, ORT, show=False)
    if a.profile: profile_summary(ort_runner(path, a.threads, profile=str(tmp / 'ort_profile')))
    if not a.no_mem:
        print("peak RSS above the RSS before the call (separate process each; first call / steady state):")
        for impl in ['ours', 'theirs', 'ort']:
            r = C.peak_in_subprocess(__file__, impl, ['--threads', str(a.threads), '--onnx', str(path)])
            print(f"  {impl:>7s}: first {r['first_call_mib']:.0f} MiB, steady {r['steady_mib']:.0f} MiB "
                  f"(RSS before {r['rss_before_mib']:.0f} MiB, process peak {r['peak_total_mib']:.0f} MiB)")


if __name__ == '__main__':
    main()
