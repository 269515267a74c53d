"""The quick-start benchmark: train DETR from scratch on the generated shapes for a wall-clock budget on the CPU (as
README's first command does), then measure what a user gets from the checkpoint, image by image:

    python bench/quickstart.py                                   # 10 minutes of training, 2 threads, then the report
    python bench/quickstart.py --minutes 5.5                     # a machine 1.8x slower, in effect
    python bench/quickstart.py --checkpoint runs/quickstart/checkpoint.pth   # only measure an existing run
    python bench/quickstart.py --minutes 3 --lr 5e-4             # any detr_train flag overrides the preset
    python bench/quickstart.py --epochs 10 --threads 1 --no-pad_invariant --dec_layers 2   # fixed epochs, no budget

It prints the epochs and seconds per epoch the figures came from; the AP that training printed (its last evaluation),
the AP of `detr_train --eval`, the AP of `detect` run on every validation image alone, and of padded batches of 8;
then, per decoder layer, AP and AP50 without and with class-wise NMS (IoU 0.7) and the duplicate rate (appendix
evaluation), and the share of objects found by a detection scoring at least 0.7 (`detect`'s default threshold).
The last line is one JSON record. This is a benchmark, not a test: nbdev_test does not run it.
"""
import argparse, contextlib, io, json, logging, os, sys, time, warnings
from pathlib import Path


def detect_ap(model, ds, transform):
    "COCO AP/AP50 of `detect` called on each validation image file alone (threshold 0: every query)."
    from PIL import Image
    from annotated_detr.inference import detect
    from annotated_detr.train import coco_evaluate, coco_of, to_coco_results
    coco, preds = coco_of(ds), {}
    for image_id in sorted(coco.imgs):
        path = Path(ds.root) / coco.imgs[image_id]['file_name']
        found = detect(model, [Image.open(path)], threshold=0.0, transform=transform)[0]   # one image alone
        preds[image_id] = {k: found[k] for k in ('boxes', 'scores', 'labels')}
    return coco_evaluate(coco, to_coco_results(preds), sorted(preds))[:2]


def run():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--minutes', type=float, default=10., help='training wall-clock budget')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--output_dir', default=None, help='default: runs/bench_quickstart/<time>')
    p.add_argument('--checkpoint', default=None, help='measure this checkpoint instead of training one')
    p.add_argument('--epochs', type=int, default=None, help='train this many epochs instead of a time budget '
                   '(the learning rate drops after 80 %% of them): comparisons that do not move with the machine')
    known, rest = p.parse_known_args()
    # OpenMP's waiting policy is left to the environment, as in README's command: on an idle machine the default
    # (spinning) was faster; on cores shared with other processes use OMP_WAIT_POLICY=PASSIVE (set before torch loads).
    import torch
    torch.set_num_threads(known.threads)
    from annotated_detr.train_command import parse_args, main, data_root, _build_data
    from annotated_detr.checkpoints import load_checkpoint
    from annotated_detr.data import make_coco_transforms
    from annotated_detr.evaluation import set_prediction_report, format_set_prediction_report, layer_predictions
    from annotated_detr.figures import split_cases, error_counts
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', stream=sys.stdout)
    load_before = os.getloadavg()
    if known.checkpoint is None:
        out = known.output_dir or f"runs/bench_quickstart/{time.strftime('%Y%m%d-%H%M%S')}"
        args = parse_args(['--preset', 'quickstart', '--time_budget', str(known.minutes), '--output_dir', out, *rest])
        if known.epochs:   # the comparisons of appendix evaluation ("The quick start, measured"): the same number of epochs for every variant
            args.time_budget, args.lr_drop_time, args.epochs = None, None, known.epochs
            if '--lr_drop' not in rest: args.lr_drop = max(1, int(0.8 * known.epochs))
        main(args)
        checkpoint = Path(out) / 'checkpoint.pth'
    else: checkpoint = Path(known.checkpoint)
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    args = argparse.Namespace(**{**ckpt['args'], 'eval': True})
    log = ckpt.get('log', [])
    # the last epoch may be cut by the budget: count it by its steps; a resumed run restarts 'train_time', so sum
    # the epochs' own times
    full = max((r.get('train_steps', 0) for r in log), default=0)
    epochs = (sum(r['train_steps'] for r in log) / full if full and all('train_steps' in r for r in log) else len(log))
    train_s = (sum(r['epoch_time'] for r in log) if log and all('epoch_time' in r for r in log)
               else (log[-1].get('train_time', 0) if log else 0))
    evaluated = [r for r in log if 'test_coco_eval_bbox' in r]
    printed = evaluated[-1]['test_coco_eval_bbox'][:2] if evaluated else [float('nan')] * 2
    model = load_checkpoint(checkpoint, progress=False).eval()
    ds = _build_data(args, data_root(args))[1]
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ev = main(argparse.Namespace(**{**vars(parse_args(['--preset', 'quickstart'])), **ckpt['args'], 'eval': True,
                                        'resume': str(checkpoint), 'output_dir': None}))['test_coco_eval_bbox'][:2]
        transform = make_coco_transforms('val', scales=[args.val_size or args.scales[0]], max_size=args.max_size)
        det = detect_ap(model, ds, transform)
        layers = layer_predictions(model, ds, batch_size=1)
        rows = set_prediction_report(model, ds, predictions=layers)
        # objects found by a detection scoring >= 0.7 (detect's default threshold), IoU >= 0.5, right class (appendix figures)
        counts = error_counts(split_cases({i: p[-1] for i, p in layers.items()}, ds, threshold=0.7))
        found = 1 - counts['missed'] / max(counts['objects'], 1)
        batched = set_prediction_report(model, ds, batch_size=8)[-1]
    last = rows[-1]
    print(f"\ncheckpoint {checkpoint}: {epochs:.1f} epochs, {train_s / max(epochs, 1):.1f} s per epoch, "
          f"{train_s / 60:.1f} min of training; pad_invariant={getattr(model.backbone[0], 'pad_invariant', False)}")
    print(f"AP / AP50 printed by training (batches of {args.batch_size}): {printed[0]:.3f} / {printed[1]:.3f}")
    print(f"AP / AP50 of detr_train --eval:                 {ev[0]:.3f} / {ev[1]:.3f}")
    print(f"AP / AP50 of detect, image by image:            {det[0]:.3f} / {det[1]:.3f}")
    print(f"AP / AP50 per image (appendix evaluation):      {last['AP']:.3f} / {last['AP50']:.3f}")
    print(f"AP / AP50 in padded batches of 8:               {batched['AP']:.3f} / {batched['AP50']:.3f}")
    print(f"duplicate rate (score >= 0.5, IoU >= 0.5, same class): {100 * last['duplicates']:.1f} %")
    print(f"objects found by a detection scoring >= 0.7 (detect's default threshold): {100 * found:.1f} % of {counts['objects']}")
    print(format_set_prediction_report(rows))
    print(json.dumps({'AP': round(last['AP'], 4), 'AP50': round(last['AP50'], 4), 'printed': [round(x, 4) for x in printed],
                      'eval': [round(float(x), 4) for x in ev], 'detect': [round(float(x), 4) for x in det],
                      'batched8': [round(batched['AP'], 4), round(batched['AP50'], 4)],
                      'duplicates': round(last['duplicates'], 4), 'found_at_0.7': round(found, 4), 'nms_gain_last': round(last['nms_gain'], 4),
                      'nms_gain_first': round(rows[0]['nms_gain'], 4), 'epochs': round(epochs, 2),
                      's_per_epoch': round(train_s / max(epochs, 1), 1), 'threads': known.threads,
                      'load_avg_before': [round(x, 2) for x in load_before],
                      'load_avg_after': [round(x, 2) for x in os.getloadavg()], 'checkpoint': str(checkpoint),
                      'omp_wait_policy': os.environ.get('OMP_WAIT_POLICY'), 'flags': rest}))


if __name__ == '__main__':
    run()
