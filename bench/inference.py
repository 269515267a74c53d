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
from _levers import fold_frozen_bn, channels_last, max_abs_diff  # noqa: E402
import torch  # noqa: E402

GOAL = 0.6


def build_ours(levers=()):
    from annotated_detr.nested_tensor import NestedTensor
    torch.manual_seed(0)
    model = C.ours_build_detr()(num_classes=91).eval()
    if 'fold' in levers: model = fold_frozen_bn(model)
    cl = 'cl' in levers
    if cl: model = channels_last(model)
    x, mask = C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))

    def run():
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        return model(NestedTensor(xx, mask))
    if 'compile' in levers:
        cmodel = torch.compile(model)
        def run():  # noqa: F811
            xx = x.contiguous(memory_format=torch.channels_last) if cl else x
            return cmodel(NestedTensor(xx, mask))
    return model, run


def build_theirs(levers=()):
    model = C.hf_detr(num_labels=91).eval()
    if 'cl' in levers: model = channels_last(model)
    x, mask = C.pad_batch(C.random_images(C.EXAMPLE_SHAPES))
    pixel_mask = (~mask).long()   # HF: 1 = real pixel, 0 = padding
    cl = 'cl' in levers

    def run():
        xx = x.contiguous(memory_format=torch.channels_last) if cl else x
        return model(pixel_values=xx, pixel_mask=pixel_mask)
    return model, run


def parse_levers(s): return tuple(v for v in s.split(',') if v)


def mem_main(impl, levers, threads):
    "Child process: build one implementation, report its peak RSS during inference as a JSON line."
    torch.set_num_threads(threads)
    build = build_theirs if impl == 'theirs' else build_ours
    _, run = build(levers if impl != 'ours_plain' else ())
    with torch.inference_mode():
        r = C.measure_peak(run, repeats=2)
    print('MEM ' + json.dumps(r))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='2 repeats, no memory subprocesses')
    p.add_argument('--repeats', type=int, default=7)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--levers', default='fold,cl', help="ours' fast path: comma list of fold, cl, compile")
    p.add_argument('--hf-levers', default='', help="also time transformers with these levers (e.g. 'cl')")
    p.add_argument('--no-mem', action='store_true', help='skip the peak-memory subprocesses')
    p.add_argument('--mem', choices=['ours_plain', 'ours_fast', 'theirs'], help=argparse.SUPPRESS)
    a = p.parse_args()
    levers, hf_levers = parse_levers(a.levers), parse_levers(a.hf_levers)
    if a.mem: return mem_main(a.mem, levers, a.threads)
    if a.quick: a.repeats, a.no_mem = 2, True
    torch.set_num_threads(a.threads)

    ours_plain, run_plain = build_ours()
    ours_fast, run_fast = build_ours(levers)
    theirs, run_theirs = build_theirs()
    fns = {'ours (plain)': run_plain, f'ours (+{"+".join(levers)})': run_fast, 'transformers': run_theirs}
    if hf_levers:
        _, run_theirs_l = build_theirs(hf_levers)
        fns[f'transformers (+{"+".join(hf_levers)})'] = run_theirs_l
    print(f"machine: {C.machine()}")
    print(f"params: ours {C.n_params(ours_plain):,}  transformers {C.n_params(theirs):,}")
    with torch.inference_mode():
        ref, out = run_plain(), run_fast()
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
