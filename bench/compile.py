"""Compiled against eager DETR: eval forward (what `detect` runs) and optionally a training step, on this machine.

The model is `build_detr(...)` (DETR-R50 by default, `--small` for the tiny fixture configuration) with random
weights; the compiled copy is `build_detr(..., compile=True)` (`model.compile(dynamic=True)`) with the same
weights. Both get the same padded batch (a `NestedTensor`); after one compiling call each, the two alternate for
`--repeats` rounds. The outputs are checked (max |diff| <= 1e-4 on logits and boxes, aux outputs included), and a
batch of other image sizes is run once to show whether it compiles again. Figures are printed and appended as one
JSON line (command, machine, torch, date, figures) to bench/results/compile.jsonl.

    python bench/compile.py                     # R50, the two running-example images, eval forward
    python bench/compile.py --train             # also a training step (forward, loss, backward, AdamW)
    python bench/compile.py --small --repeats 3 # the tiny configuration (seconds, not minutes, to compile)
"""
from __future__ import annotations
import argparse, copy, datetime, json, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if '--warm-cache' not in sys.argv:   # time the compilation a first run pays: Inductor's on-disk caches start empty
    import os, tempfile
    os.environ['TORCHINDUCTOR_CACHE_DIR'] = tempfile.mkdtemp(prefix='inductor_cold_')
import _common as C  # noqa: E402
import torch  # noqa: E402

SMALL = dict(num_classes=5, backbone='resnet18', hidden_dim=64, nheads=4, enc_layers=2, dec_layers=2,
             dim_feedforward=128, dropout=0.0, num_queries=10)
OTHER_SHAPES = [(3, 640, 480), (3, 512, 704)]   # a second batch at new sizes: a dynamic graph does not recompile


def max_diff(a: dict, b: dict) -> float:
    "Largest |difference| over logits, boxes and the aux outputs."
    d = [(a[k] - b[k]).abs().max().item() for k in ('pred_logits', 'pred_boxes')]
    for x, y in zip(a.get('aux_outputs', []), b.get('aux_outputs', [])): d.append(max_diff(x, y))
    return max(d)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--small', action='store_true', help='the tiny fixture configuration (resnet18, d=64, 2+2 layers)')
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--train', action='store_true', help='also time a training step, eager vs compiled')
    p.add_argument('--warm-cache', action='store_true', help="reuse Inductor's on-disk cache (default: a fresh, empty one)")
    p.add_argument('--out', default=str(Path(__file__).resolve().parent / 'results' / 'compile.jsonl'))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from annotated_detr.transformer import build_detr
    from annotated_detr.nested_tensor import nested_tensor_from_tensor_list
    cfg = SMALL if a.small else {}
    shapes = [(3, 200, 200), (3, 160, 250)] if a.small else C.EXAMPLE_SHAPES
    other = [(3, 128, 96), (3, 96, 144)] if a.small else OTHER_SHAPES
    torch.manual_seed(0)
    eager = build_detr(**cfg).eval()
    compiled = build_detr(**cfg, compile=True).eval()
    compiled.load_state_dict(eager.state_dict())
    x = nested_tensor_from_tensor_list(C.random_images(shapes))
    y = nested_tensor_from_tensor_list(C.random_images(other, seed=1))   # made outside inference_mode, as x
    print(f"machine: {C.machine()}; load {C.loadavg()}")
    print(f"model: {'small ' + str(SMALL) if a.small else 'DETR-R50'}; batch {[list(s) for s in shapes]} padded to {list(x.tensors.shape)}")
    fig = {}
    with torch.inference_mode():
        t0 = time.perf_counter(); out_c = compiled(x); fig['first_call_s'] = time.perf_counter() - t0
        out_e = eager(x)
        fig['max_diff'] = max_diff(out_c, out_e)
        t0 = time.perf_counter(); out_c2 = compiled(y); fig['new_sizes_first_call_s'] = time.perf_counter() - t0
        fig['max_diff_new_sizes'] = max_diff(out_c2, eager(y))
        times = C.interleaved({'eager': lambda: eager(x), 'compiled': lambda: compiled(x)}, a.repeats, warmup=1)
    print(f"compiling call {fig['first_call_s']:.1f} s; a batch at new sizes {other}: {fig['new_sizes_first_call_s']:.2f} s")
    print(f"check: max |compiled - eager| {fig['max_diff']:.1e} ({'OK' if fig['max_diff'] <= 1e-4 else 'FAIL'}), "
          f"at the new sizes {fig['max_diff_new_sizes']:.1e} ({'OK' if fig['max_diff_new_sizes'] <= 1e-4 else 'FAIL'})")
    print('eval forward:')
    fig['forward'] = {k: C.stats(v) for k, v in times.items()}
    fig['forward_ratio'] = C.report_ratio(times, 'compiled', 'eager')
    if a.train:
        from annotated_detr.matcher_loss import build_criterion
        from train_step import make_targets
        crit = build_criterion(num_classes=cfg.get('num_classes', 91), dec_layers=cfg.get('dec_layers', 6))
        targets = make_targets(counts=(3, 5)[:len(shapes)])
        def stepper(model):
            model = copy.deepcopy(model).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)
            def step():
                ld = crit(model(x), targets)
                loss = sum(ld[k] * w for k, w in crit.weight_dict.items() if k in ld)
                opt.zero_grad(); loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1); opt.step()
            return step
        steps = {'eager': stepper(eager), 'compiled': stepper(compiled)}
        t0 = time.perf_counter(); steps['compiled'](); fig['train_first_call_s'] = time.perf_counter() - t0
        print(f"training step: compiling call {fig['train_first_call_s']:.1f} s")
        times = C.interleaved(steps, a.repeats, warmup=1)
        fig['train_step'] = {k: C.stats(v) for k, v in times.items()}
        fig['train_ratio'] = C.report_ratio(times, 'compiled', 'eager')
    rec = {'command': 'python ' + ' '.join(sys.argv), 'machine': C.machine(), 'torch': torch.__version__,
           'date': datetime.datetime.now().isoformat(timespec='seconds'), 'load': C.loadavg(),
           'model': 'small' if a.small else 'DETR-R50', 'batch': [list(s) for s in shapes],
           'inductor_cache': 'warm' if a.warm_cache else 'cold', 'figures': fig}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, 'a') as f: f.write(json.dumps(rec, default=float) + '\n')
    print(f"appended to {a.out}")
    return 0 if fig['max_diff'] <= 1e-4 and fig['max_diff_new_sizes'] <= 1e-4 else 1


if __name__ == '__main__':
    sys.exit(main())
