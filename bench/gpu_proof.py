"""The GPU proof of 07_train: one script that runs, on a machine with an NVIDIA GPU, everything the book
promises about GPUs, and writes each step's log and one `summary.json` into `--out`.

1. `cuda_cells`: the `#| cuda` cells with the whole suite around them (`nbdev_test --flags cuda`);
2. `gpu_bench`: `bench/gpu.py --with-hf` (R50, batch 8 at COCO sizes: images/s in fp32 and bf16, with and
   without channels_last, ours and transformers', peak GPU memory);
3. `coco_sized`: the paper's recipe flags (R50, `--dataset coco` sizes, batch 4, `--amp`) on a generated
   COCO-format set of 800-1066 pixel images for a few hundred steps, then `--resume` for one more epoch;
4. `torchrun`: the same data through `torchrun --nproc_per_node=1` (the multi-GPU path with one GPU);
5. `quickstart`: the quick start on the GPU (`--device cuda`), and the training time to AP50 >= 0.5.

    python bench/gpu_proof.py --out gpu_out              # on the GPU machine (at most --minutes, 8.5 by default)
    python bench/gpu_proof.py --dry-run --out /tmp/dry   # on a CPU: the same steps at toy sizes

`--dry-run` exercises every step up to the device calls on the CPU (tiny model and images, the cuda cells
run on the CPU through ANNOTATED_DETR_CPU_DRY_RUN=1); its figures mean nothing. Steps 1 and 3-4 run side by
side (different resources: CPU-bound notebooks, one GPU training); 2 and 5 run alone, since they are timed.
"""
from __future__ import annotations
import argparse, json, os, shutil, signal, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = [float('inf')]   # time.time() by which every step must have ended (--minutes)


def run(name: str, cmd: list, out: Path, timeout: float, env: dict | None = None, results: dict | None = None) -> dict:
    "Run `cmd`, its output into out/<name>.log; record rc, seconds and the log's last lines in `results`."
    t0 = time.time()
    timeout = max(1., min(timeout, DEADLINE[0] - t0))
    log = out / f'{name}.log'
    with open(log, 'w') as f:
        f.write('$ ' + ' '.join(map(str, cmd)) + '\n'); f.flush()
        proc = subprocess.Popen(list(map(str, cmd)), stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try: rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:   # stop the step and every process it started (workers, torchrun ranks)
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(); rc = 'timeout'
    r = {'rc': rc, 'seconds': round(time.time() - t0, 1), 'tail': log.read_text(errors='replace').splitlines()[-6:]}
    print(f"[{name}] rc={rc} in {r['seconds']} s", flush=True)
    if results is not None: results[name] = r
    return r


def read_log(path: Path) -> list:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.exists() else []


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--out', default='gpu_proof_out', help='folder for the logs and summary.json')
    p.add_argument('--dry-run', action='store_true', help='on a CPU, at toy sizes (checks the script, not the GPU)')
    p.add_argument('--quickstart_minutes', type=float, default=2.0, help='training budget of the GPU quick start')
    p.add_argument('--coco_epochs', type=int, default=3, help='epochs of the COCO-sized run before the resume')
    p.add_argument('--minutes', type=float, default=8.5, help='every step ends (or is stopped) within this many minutes')
    p.add_argument('--cells', nargs='*', default=[], help='notebooks for cuda_cells (default: all)')
    p.add_argument('--n_train', type=int, default=400, help='training images of the COCO-sized set')
    p.add_argument('--parallel_quickstart', action='store_true', help='run the quick start beside steps 1, 3 and 4 (saves time, slows it)')
    p.add_argument('--skip', nargs='*', default=[], help='steps to leave out (cuda_cells gpu_bench coco_sized torchrun quickstart)')
    a = p.parse_args()
    out = Path(a.out).resolve(); out.mkdir(parents=True, exist_ok=True)
    DEADLINE[0] = time.time() + a.minutes * 60
    runs = ROOT / 'runs' / 'gpu_proof'
    shutil.rmtree(runs, ignore_errors=True); runs.mkdir(parents=True)
    import torch
    dry = a.dry_run
    if not dry and not torch.cuda.is_available():
        print('bench/gpu_proof.py: no CUDA device; use --dry-run on a CPU'); return 2
    py = sys.executable
    def tool(name, module):   # the console script beside this Python, else its module
        exe = Path(py).parent / name
        return [str(exe)] if exe.exists() else [py, '-m', module]
    detr_train = tool('detr_train', 'annotated_detr.train_command')
    summary = {'device': 'cpu (dry run)' if dry else torch.cuda.get_device_name(), 'torch': torch.__version__,
               'cuda': torch.version.cuda, 'dry_run': dry, 'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    results = summary['steps'] = {}
    def save():   # after every step, so that a run stopped from outside still leaves its figures
        (out / 'summary.json').write_text(json.dumps(summary, indent=1, default=str))
    dev = 'cpu' if dry else 'cuda'
    env = {'ANNOTATED_DETR_CPU_DRY_RUN': '1'} if dry else {}

    # 2. the throughput benchmark, alone on the machine
    if 'gpu_bench' not in a.skip:
        run('gpu_bench', [py, 'bench/gpu.py', '--with-hf', '--json', out / 'gpu.json', *(['--cpu-dry-run'] if dry else [])],
            out, 360, results=results)   # training steps, detect (one compilation), sync count
        if (out / 'gpu.json').exists(): summary['gpu_bench'] = json.loads((out / 'gpu.json').read_text())
        save()

    # 5. the quick start on the GPU, alone (or beside the rest with --parallel_quickstart)
    def quickstart():
        qs = runs / 'quickstart'
        flags = ['--preset', 'quickstart', '--device', dev, '--coco_path', runs / 'shapes', '--output_dir', qs,
                 '--time_budget', a.quickstart_minutes if not dry else 0.2, '--num_workers', '4' if not dry else '0']
        run('quickstart', [*detr_train, *flags], out, a.quickstart_minutes * 60 + 120, results=results)
        log = read_log(qs / 'log.txt')
        hit = next((x for x in log if x.get('test_coco_eval_bbox') and x['test_coco_eval_bbox'][1] >= 0.5), None)
        summary['quickstart'] = {
            'parallel': a.parallel_quickstart, 'minutes': a.quickstart_minutes, 'epochs': len(log),
            'epoch_s': [x['epoch_time'] for x in log],
            'AP50_by_epoch': [round(x['test_coco_eval_bbox'][1], 3) for x in log if x.get('test_coco_eval_bbox')],
            'train_s_by_epoch': [x['train_time'] for x in log],
            'final_AP': round(log[-1]['test_coco_eval_bbox'][0], 4) if log else None,
            'final_AP50': round(log[-1]['test_coco_eval_bbox'][1], 4) if log else None,
            'train_s_to_AP50_0.5': hit['train_time'] if hit else None, 'epoch_of_AP50_0.5': hit['epoch'] if hit else None}
        save()

    # 1 and 3-4 side by side: the notebooks (mostly CPU) and the COCO-sized training (the GPU)
    threads = []
    if 'cuda_cells' not in a.skip:
        test = [*tool('nbdev_test', 'nbdev.test'), '--flags', 'cuda', '--do_print', '--timing']
        for nb in a.cells or [None]:   # the whole suite, or each notebook named in --cells as a step of its own
            name, cmd = ('cuda_cells', test) if nb is None else (f'cuda_cells_{Path(nb).stem[:2]}', [*test, '--path', nb])
            threads.append(threading.Thread(target=run, args=(name, cmd, out, 300), kwargs=dict(env=env, results=results)))
    def coco_sized():
        data = runs / 'coco_sized'
        n_train, n_val, lo, hi = (a.n_train, a.n_train // 10, 800, 1066) if not dry else (16, 8, 64, 96)
        r = run('make_data', [py, '-c', f"from annotated_detr.shapes import make_shapes_dataset; "
                f"make_shapes_dataset('{data}', n_train={n_train}, n_val={n_val}, min_side={lo}, max_side={hi})"],
                out, 90, results=results)
        if r['rc'] != 0: return
        # the paper's recipe flags (R50, 100 queries, aux loss, AdamW 1e-4/1e-5, clip 0.1, multi-scale + crop
        # augmentation at COCO sizes); the backbone is random (no network for the ImageNet weights), so its batch
        # norm trains: a frozen one is the identity, and the first run on the H200 diverged at step 7 that way
        flags = ['--dataset', 'coco', '--coco_path', data, '--batch_size', '4', '--amp', '--num_workers', '8',
                 '--device', dev, '--backbone_norm', 'batch', '--weights_backbone', 'none']
        if dry: flags += ['--backbone', 'resnet18', '--hidden_dim', '64', '--nheads', '2', '--enc_layers', '1',
                          '--dec_layers', '1', '--dim_feedforward', '128', '--num_queries', '8', '--scales', '64',
                          '--max_size', '96', '--num_workers', '2']
        train = runs / 'coco_sized_run'
        if 'coco_sized' not in a.skip:
            r = run('coco_sized', [*detr_train, *flags, '--epochs', a.coco_epochs, '--output_dir', train], out, 180, results=results)
            if r['rc'] == 0:
                run('coco_sized_resume', [*detr_train, *flags, '--epochs', a.coco_epochs + 1, '--output_dir', train,
                                          '--resume', train / 'checkpoint.pth'], out, 100, results=results)
            log = read_log(train / 'log.txt')
            summary['coco_sized'] = {'epochs': [{'epoch': x['epoch'], 'loss': round(x['train_loss'], 4),
                                                 'steps': x.get('train_steps'), 'epoch_s': x['epoch_time'],
                                                 'AP50': round(x['test_coco_eval_bbox'][1], 4)} for x in log]}
            losses = [x['train_loss'] for x in log]
            summary['coco_sized']['loss_falls'] = len(losses) >= 2 and losses[a.coco_epochs - 1] < losses[0]
            summary['coco_sized']['resumed_at_epoch'] = log[a.coco_epochs]['epoch'] if len(log) > a.coco_epochs else None
            for k in ('coco_sized', 'coco_sized_resume'):
                if k in results: results[k]['tail'] = results[k]['tail'][-2:]
            save()
        if 'torchrun' not in a.skip:
            ddp = runs / 'torchrun_run'
            r = run('torchrun', [py, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1', '-m', 'annotated_detr.train_command',
                                 *flags, '--epochs', '1', '--output_dir', ddp], out, 120, results=results)
            log = read_log(ddp / 'log.txt')
            summary['torchrun'] = {'epochs': len(log), 'loss': round(log[0]['train_loss'], 4) if log else None,
                                   'checkpoint': (ddp / 'checkpoint.pth').exists()}
            save()
    threads.append(threading.Thread(target=coco_sized))
    if a.parallel_quickstart and 'quickstart' not in a.skip: threads.append(threading.Thread(target=quickstart))
    for t in threads: t.start()
    for t in threads: t.join()
    save()

    if 'quickstart' not in a.skip and not a.parallel_quickstart: quickstart()
    summary['finished'] = time.strftime('%Y-%m-%d %H:%M:%S')
    save()
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(main())
