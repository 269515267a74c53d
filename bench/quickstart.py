"""The quick-start benchmark: train DETR from scratch on the generated shapes dataset for a fixed wall-clock
budget on the CPU, evaluate with COCOeval, print the AP table and one JSON line with AP and AP50.

    python bench/quickstart.py                      # 10 minutes of training, 2 threads, the quickstart preset
    python bench/quickstart.py --minutes 3 --lr 5e-4  # any detr_train flag overrides the preset

The budget counts training steps only; data generation (first run only) and the evaluations are extra and
reported separately. This is a benchmark, not a test: it is not run by nbdev_test.
"""
import argparse, json, logging, os, sys, time
from pathlib import Path


def run():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=10., help='training wall-clock budget')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--output_dir', default=None, help='default: runs/bench_quickstart/<time>')
    known, rest = p.parse_known_args()
    # Like the README's command, we leave OpenMP's waiting policy to the environment. On an idle machine the
    # default (threads spin while they wait) was about 1.3x faster per epoch than OMP_WAIT_POLICY=PASSIVE here;
    # on cores shared with other processes spinning threads collapse (we measured 10x slower steps), so set
    # OMP_WAIT_POLICY=PASSIVE there. It must be set before torch is imported.
    import torch
    torch.set_num_threads(known.threads)
    from annotated_detr.train_command import parse_args, main, format_coco_stats
    out = known.output_dir or f"runs/bench_quickstart/{time.strftime('%Y%m%d-%H%M%S')}"
    args = parse_args(['--preset', 'quickstart', '--time_budget', str(known.minutes), '--output_dir', out, *rest])
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', stream=sys.stdout)
    load_before = os.getloadavg()
    start = time.time()
    record = main(args)
    total = time.time() - start
    stats = record['test_coco_eval_bbox']
    print(format_coco_stats(stats))
    print(json.dumps({'AP': round(stats[0], 4), 'AP50': round(stats[1], 4), 'train_min': round(record['train_time'] / 60, 2),
                      'total_min': round(total / 60, 2), 'epochs': record['epoch'] + 1, 'threads': known.threads,
                      'load_avg_before': [round(x, 2) for x in load_before],
                      'load_avg_after': [round(x, 2) for x in os.getloadavg()], 'output_dir': out,
                      'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'),
                      'flags': rest}))


if __name__ == '__main__':
    run()
