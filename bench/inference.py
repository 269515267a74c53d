"""Inference benchmark: DETR-R50 in eval mode on the two running-example images, CPU.

Ours (`annotated_detr.transformer.build_detr` as shipped: frozen batch norms applied through the convolution
weights and a channels_last backbone) against HuggingFace transformers' `DetrForObjectDetection` built offline
with the same architecture (ResNet-50, d=256, 6+6 layers, N=100, 91 classes) and the very same weights. All get
the same padded batch `[2, 3, 765, 911]` and mask, run under `torch.inference_mode()` with
`torch.set_num_threads(2)`, in one process, alternating after a warmup. The ratio is of medians.

Variants of ours: `ours` (the library as shipped), `ours baseline` (the library's levers off:
`Backbone(fuse_bn=False, channels_last=False)`, same weights) and, with `--also fold` (the default), the
bench-only lever of folding the batch norms into the convolutions once (inference only, see bench/_levers.py).
Every variant is checked against the baseline path (max |diff| <= 1e-4 on logits, boxes and aux outputs).

    python bench/inference.py            # full run (timings + peak memory in subprocesses)
    python bench/inference.py --quick    # smoke run
"""
from __future__ import annotations
import argparse, json, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _levers import fold_frozen_bn, channels_last, max_abs_diff  # noqa: E402
import torch  # noqa: E402

GOAL = 0.6
OURS, BASE, THEIRS = 'ours', 'ours baseline (levers off)', 'transformers'


def make_runner(model, levers=(), impl='ours'):
    "A no-argument callable running `model` on the example batch; levers are applied to a copy."
    import copy
    from annotated_detr.nested_tensor import NestedTensor
    x, mask = C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))
    if impl == 'theirs':
        if 'cl' in levers: model = channels_last(copy.deepcopy(model))
        pixel_mask = (~mask).long()   # transformers: 1 = real pixel, 0 = padding
        cl = 'cl' in levers
        return lambda: model(pixel_values=x.contiguous(memory_format=torch.channels_last) if cl else x,
                             pixel_mask=pixel_mask)
    if levers: model = copy.deepcopy(model)
    if 'fold' in levers: model = fold_frozen_bn(model, inplace=True)
    f = torch.compile(model) if 'compile' in levers else model
    return lambda: f(NestedTensor(x, mask))   # the library's backbone makes its input channels_last itself


def parse_levers(s): return tuple(v for v in s.split(',') if v)


def mem_main(impl, threads):
    "Child process: build one implementation, report its peak RSS during inference as a JSON line."
    torch.set_num_threads(threads)
    ours, base, theirs = C.same_weights_pair(aux_loss=True, with_baseline=True)
    model = {'ours': ours, 'ours_baseline': base, 'theirs': theirs}[impl]
    del ours, base, theirs
    run = make_runner(model, (), 'theirs' if impl == 'theirs' else 'ours')
    with torch.inference_mode():
        r = C.measure_peak(run, repeats=2)
    print('MEM ' + json.dumps(r))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='2 repeats, no memory subprocesses')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--also', default='fold', help="more variants of ours (as shipped) to time, ';'-separated lever "
                   "lists of: fold, compile (e.g. 'fold;compile'); '' for none")
    p.add_argument('--hf-levers', default='', help="also time transformers with these levers (e.g. 'cl')")
    p.add_argument('--no-mem', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--mem', choices=['ours', 'ours_baseline', 'theirs'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mem: return mem_main(a.mem, a.threads)
    if a.quick: a.repeats, a.no_mem = 2, True
    torch.set_num_threads(a.threads)
    hf_levers = parse_levers(a.hf_levers)

    ours, base, theirs = C.same_weights_pair(aux_loss=True, with_baseline=True)   # identical weights, BN calibrated
    run_ours, run_base, run_theirs = make_runner(ours), make_runner(base), make_runner(theirs, (), 'theirs')
    fns = {OURS: run_ours, BASE: run_base, THEIRS: run_theirs}
    also = [parse_levers(v) for v in a.also.split(';') if v]
    for lv in also: fns[f'ours + {"+".join(lv)}'] = make_runner(ours, lv)
    if hf_levers: fns[f'transformers + {"+".join(hf_levers)}'] = make_runner(theirs, hf_levers, 'theirs')
    print(f"machine: {C.machine()}")
    print(f"params: ours {C.n_params(ours):,}  transformers {C.n_params(theirs):,}")
    with torch.inference_mode():
        ref, hf = run_base(), run_theirs()
        dh = max((ref['pred_logits'] - hf.logits).abs().max().item(), (ref['pred_boxes'] - hf.pred_boxes).abs().max().item())
        print(f"check: ours baseline vs transformers with the same weights: max |diff| = {dh:.2e} -> {'OK' if dh <= 1e-4 else 'FAIL'}")
        for k, f in fns.items():
            if not k.startswith('ours') or k == BASE: continue
            d = max_abs_diff(ref, f())
            print(f"check: {k} vs {BASE} max |diff| = {d:.2e} (logits, boxes, aux) -> {'OK' if d <= 1e-4 else 'FAIL'}")
            if d > 1e-4: raise SystemExit(f"{k} differs from the baseline path by more than 1e-4")
        print(f"input: batch {[list(s) for s in C.EXAMPLE_SHAPES]} padded to {list(C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))[0].shape)}")
        print(f"load before: {C.loadavg()}")
        t = C.interleaved(fns, a.repeats, warmup=1)
        print(f"load after:  {C.loadavg()}")
    print("inference, seconds per batch of 2:")
    C.report_ratio(t, OURS, THEIRS, GOAL)
    C.report_ratio(t, BASE, THEIRS, show=False)
    C.report_ratio(t, OURS, BASE, show=False)
    for k in fns:
        if k.startswith('ours + '): C.report_ratio(t, k, THEIRS, show=False); C.report_ratio(t, k, OURS, show=False)
        if k.startswith('transformers + '): C.report_ratio(t, OURS, k, show=False)
    if not a.no_mem:
        print("peak RSS above the RSS before the call (separate process each; first call / steady state):")
        for impl in ['ours', 'ours_baseline', 'theirs']:
            r = C.peak_in_subprocess(__file__, impl, ['--threads', str(a.threads)])
            print(f"  {impl:>13s}: first {r['first_call_mib']:.0f} MiB, steady {r['steady_mib']:.0f} MiB "
                  f"(RSS before {r['rss_before_mib']:.0f} MiB, process peak {r['peak_total_mib']:.0f} MiB)")


if __name__ == '__main__':
    main()
