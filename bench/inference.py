"""Inference benchmark: DETR-R50 in eval mode on the two running-example images, CPU.

Ours (`annotated_detr.transformer.build_detr`) against HuggingFace transformers' `DetrForObjectDetection`
built offline with the same architecture (ResNet-50, d=256, 6+6 layers, N=100, 91 classes) and random
weights. Both get the same padded batch `[2, 3, 765, 911]` and mask, run under `torch.inference_mode()`
with `torch.set_num_threads(2)`, in one process, alternating after a warmup. The ratio is of medians.

Variants of ours: `plain` (the library as is) and `fast` (levers applied from outside the library, see
bench/_levers.py and --levers): folding the frozen batch norms into the convolutions and channels_last
weights. The fast path is checked against the plain path (max |diff| <= 1e-4 on logits and boxes).

    python bench/inference.py            # full run (timings + peak memory in subprocesses)
    python bench/inference.py --quick    # smoke run
"""
from __future__ import annotations
import argparse, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from _levers import fold_frozen_bn, fuse_frozen_bn, channels_last, max_abs_diff  # noqa: E402
import torch  # noqa: E402

GOAL = 0.6


def make_runner(model, levers=(), impl='ours'):
    "A no-argument callable running `model` on the example batch; ours gets the levers applied to a copy."
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
    if 'fuse' in levers: model = fuse_frozen_bn(model)
    cl = 'cl' in levers
    if cl: model = channels_last(model)
    f = torch.compile(model) if 'compile' in levers else model
    return lambda: f(NestedTensor(x.contiguous(memory_format=torch.channels_last) if cl else x, mask))


def parse_levers(s): return tuple(v for v in s.split(',') if v)


def mem_main(impl, levers, threads):
    "Child process: build one implementation, report its peak RSS during inference as a JSON line."
    torch.set_num_threads(threads)
    ours, theirs = C.same_weights_pair(aux_loss=True)
    if impl == 'theirs': del ours; run = make_runner(theirs, (), 'theirs')
    else: del theirs; run = make_runner(ours, levers if impl == 'ours_fast' else ())
    with torch.inference_mode():
        r = C.measure_peak(run, repeats=2)
    print('MEM ' + json.dumps(r))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='2 repeats, no memory subprocesses')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--levers', default='fold,cl', help="ours' fast path: comma list of fold, fuse, cl, compile")
    p.add_argument('--also', default='', help="more variants of ours to time, ';'-separated lever lists (e.g. 'fold;cl')")
    p.add_argument('--hf-levers', default='', help="also time transformers with these levers (e.g. 'cl')")
    p.add_argument('--no-mem', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--mem', choices=['ours_plain', 'ours_fast', 'theirs'], help=argparse.SUPPRESS)
    a = p.parse_args()
    levers, hf_levers = parse_levers(a.levers), parse_levers(a.hf_levers)
    if a.mem: return mem_main(a.mem, levers, a.threads)
    if a.quick: a.repeats, a.no_mem = 2, True
    torch.set_num_threads(a.threads)

    ours_plain, theirs = C.same_weights_pair(aux_loss=True)   # identical weights, frozen BN calibrated
    run_plain, run_fast, run_theirs = make_runner(ours_plain), make_runner(ours_plain, levers), make_runner(theirs, (), 'theirs')
    fns = {'ours (plain)': run_plain, f'ours (+{"+".join(levers)})': run_fast, 'transformers': run_theirs}
    also = [parse_levers(v) for v in a.also.split(';') if v]
    for lv in also:
        r_ = make_runner(ours_plain, lv)
        with torch.inference_mode():
            d = max_abs_diff(run_plain(), r_())
        print(f"check: ours (+{'+'.join(lv)}) vs plain max |diff| = {d:.2e}")
        fns[f'ours (+{"+".join(lv)})'] = r_
    if hf_levers:
        run_theirs_l = make_runner(theirs, hf_levers, 'theirs')
        fns[f'transformers (+{"+".join(hf_levers)})'] = run_theirs_l
    print(f"machine: {C.machine()}")
    print(f"params: ours {C.n_params(ours_plain):,}  transformers {C.n_params(theirs):,}")
    with torch.inference_mode():
        ref, out, hf = run_plain(), run_fast(), run_theirs()
        dh = max((ref['pred_logits'] - hf.logits).abs().max().item(), (ref['pred_boxes'] - hf.pred_boxes).abs().max().item())
        print(f"check: ours vs transformers with the same weights: max |diff| = {dh:.2e} -> {'OK' if dh <= 1e-4 else 'FAIL'}")
        d = max_abs_diff(ref, out)
        print(f"check: fast path vs plain path max |diff| = {d:.2e} (logits, boxes, aux) -> "
              f"{'OK' if d <= 1e-4 else 'FAIL'}")
        if d > 1e-4: raise SystemExit("fast path differs from plain path by more than 1e-4")
        print(f"input: batch {[list(s) for s in C.EXAMPLE_SHAPES]} padded to {list(C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))[0].shape)}")
        print(f"load before: {C.loadavg()}")
        t = C.interleaved(fns, a.repeats, warmup=1)
        print(f"load after:  {C.loadavg()}")
    print("inference, seconds per batch of 2:")
    C.report_ratio(t, 'ours (plain)', 'transformers', GOAL)
    C.report_ratio({k: t[k] for k in [f'ours (+{"+".join(levers)})', 'transformers']},
                   f'ours (+{"+".join(levers)})', 'transformers', GOAL, show=False)
    for lv in also:
        k = f'ours (+{"+".join(lv)})'
        C.report_ratio({k: t[k], 'transformers': t['transformers']}, k, 'transformers', show=False)
    if hf_levers:
        C.report_ratio({k: t[k] for k in [f'ours (+{"+".join(levers)})', f'transformers (+{"+".join(hf_levers)})']},
                       f'ours (+{"+".join(levers)})', f'transformers (+{"+".join(hf_levers)})', show=False)
    if not a.no_mem:
        print("peak RSS above the RSS before the call (separate process each; first call / steady state):")
        extra = ['--levers', a.levers, '--threads', str(a.threads)]
        for impl in ['ours_plain', 'ours_fast', 'theirs']:
            r = C.peak_in_subprocess(__file__, impl, extra)
            print(f"  {impl:>11s}: first {r['first_call_mib']:.0f} MiB, steady {r['steady_mib']:.0f} MiB "
                  f"(RSS before {r['rss_before_mib']:.0f} MiB, process peak {r['peak_total_mib']:.0f} MiB)")


if __name__ == '__main__':
    main()
