"""The mask benchmark (issue 18): freeze a trained detector, train only its mask head on the generated shapes for a
fixed wall-clock budget on the CPU (by default the frozen detector runs once over the training split and the head
then trains on its cached outputs, decoding the matched queries only: `cache_detector`; `--no_cache` runs the whole
model at every step), evaluate boxes and masks with COCOeval (each validation image alone by default:
"per image", as `detect` sees it), print both tables and one JSON line.

    detr_train --preset quickstart --output_dir runs/quickstart        # the detector (10 CPU minutes)
    python bench/masks.py --detector runs/quickstart/checkpoint.pth     # 5 minutes of mask-head training
    python bench/masks.py --detector ... --minutes 1 --out images/masks_shapes.png --panoptic_out images/panoptic_shapes.png

The data pipeline follows the detector's training arguments stored in its checkpoint (dataset folder, input
sizes); the training images are not augmented (as README's `--no_augment` mask command) unless --augment is given;
the flags below override the rest. The budget counts training steps only; building the
datasets and the evaluation are extra and reported separately. This is a benchmark, not a test.
"""
import argparse, json, os, sys, time
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path: sys.path.insert(0, _ROOT)   # run from a clone without installing


def run():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--detector', required=True, help="a detection checkpoint (detr_train's checkpoint.pth)")
    p.add_argument('--minutes', type=float, default=5., help='mask-head training wall-clock budget')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--lr', type=float, default=1e-3, help='AdamW learning rate of the mask head')
    p.add_argument('--batch_size', type=int, default=None, help="default: the detector's")
    p.add_argument('--coco_path', default=None, help="dataset folder (default: the detector's, else the shapes cache)")
    p.add_argument('--eval_batch_size', type=int, default=1,
                   help='validation images per forward pass; 1 (default): each image alone, as detect sees it ("per image")')
    p.add_argument('--max_val', type=int, default=None, help='evaluate on the first images of the validation split only')
    p.add_argument('--threshold', type=float, default=0.7, help='score threshold of the drawing')
    p.add_argument('--out', default=None, help='draw the first validation images with their masks into this png')
    p.add_argument('--panoptic_out', default=None, help="draw the first validation images' panoptic view (background as stuff) into this png")
    p.add_argument('--save_head', default=None, help='save the trained mask head (bbox_attention and mask_head weights) to this file')
    p.add_argument('--pack', default=None, help="write the head in float16 with this run's JSON record (pack_mask_head), e.g. annotated_detr/assets/shapes_mask_head.pth")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--augment', action='store_true', help="train the head on DETR's augmentation of the training images (no cache)")
    p.add_argument('--no_cache', action='store_true', help='run the frozen detector at every step (the plain loop)')
    a = p.parse_args()
    import torch
    from torch.utils.data import DataLoader, Subset
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from annotated_detr.data import build_dataset
    from annotated_detr.nested_tensor import collate_fn
    from annotated_detr.transformer import read_checkpoint
    from annotated_detr.train_command import DEFAULT_SHAPES_PATH, format_coco_stats
    from annotated_detr.segmentation import (segmentation_from_detector, build_segmentation_criterion, train_mask_head,
                                             evaluate_masks, draw_masks, panoptic_view, cache_detector,
                                             pack_mask_head)
    _, ckpt = read_checkpoint(a.detector, progress=False)
    targs = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    if targs.get('dataset', 'shapes') != 'shapes': sys.exit(f"{a.detector} was trained on {targs['dataset']}, not the shapes")
    root = Path(a.coco_path or targs.get('coco_path') or DEFAULT_SHAPES_PATH).expanduser()
    scales, max_size = targs.get('scales', [128]), targs.get('max_size', 160)
    kw = dict(dataset='shapes', max_size=max_size, return_masks=True)
    t0 = time.time()
    ds_val = build_dataset('val', root, scales=[targs['val_size']] if targs.get('val_size') else scales, **kw)
    ds_train = build_dataset('train', root, scales=scales, **kw)
    if not a.augment: ds_train.transforms = build_dataset('val', root, scales=scales, **kw).transforms
    else: a.no_cache = True   # a cache would freeze one random augmentation of each image
    if a.max_val: ds_val = Subset(ds_val, range(min(a.max_val, len(ds_val))))
    model = segmentation_from_detector(a.detector, progress=False)
    K = model.detr.class_embed.out_features - 1
    criterion = build_segmentation_criterion(num_classes=K, dec_layers=len(model.detr.transformer.decoder.layers))
    optimizer = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=a.lr, weight_decay=1e-4)
    bs = a.batch_size or targs.get('batch_size', 8)
    g = torch.Generator().manual_seed(a.seed)
    dl_train = DataLoader(ds_train, batch_size=bs, shuffle=True, drop_last=True, collate_fn=collate_fn, generator=g)
    dl_val = DataLoader(ds_val, batch_size=a.eval_batch_size, collate_fn=collate_fn)
    setup = time.time() - t0
    load_before = os.getloadavg()
    start, losses, epochs = time.time(), [], 0
    deadline = start + 60 * a.minutes               # the budget includes the caching pass
    data, cache_s = dl_train, 0.
    if not a.no_cache:
        data = cache_detector(model, criterion, dl_train); cache_s = time.time() - start
    order = torch.Generator().manual_seed(a.seed + 1)
    while time.time() < deadline:
        if epochs and not a.no_cache: data = [data[i] for i in torch.randperm(len(data), generator=order).tolist()]
        losses += train_mask_head(model, criterion, data, optimizer, deadline=deadline)
        epochs += 1
    train_s = time.time() - start
    t1 = time.time()
    ev = evaluate_masks(model, dl_val, keep_predictions=False)
    eval_s = time.time() - t1
    print('boxes (the frozen detector):'); print(format_coco_stats(ev['coco_eval_bbox']))
    print(f"masks ({'per image' if a.eval_batch_size == 1 else f'batches of {a.eval_batch_size}'}):")
    print(format_coco_stats(ev['coco_eval_masks']))
    if a.out:
        draw_masks(model, ds_val.dataset if isinstance(ds_val, Subset) else ds_val, a.out, threshold=a.threshold)
    if a.panoptic_out:
        panoptic_view(model, ds_val.dataset if isinstance(ds_val, Subset) else ds_val, a.panoptic_out, threshold=a.threshold)
    if a.save_head:
        torch.save({k: v for k, v in model.state_dict().items() if not k.startswith('detr.')}, a.save_head)
    first, last = sum(losses[:20]) / max(len(losses[:20]), 1), sum(losses[-20:]) / max(len(losses[-20:]), 1)
    record = {'mask_AP': round(ev['coco_eval_masks'][0], 4), 'mask_AP50': round(ev['coco_eval_masks'][1], 4),
                      'box_AP50': round(ev['coco_eval_bbox'][1], 4), 'train_min': round(train_s / 60, 2),
                      'steps': len(losses), 'epochs_started': epochs, 'cached': not a.no_cache, 'cache_s': round(cache_s, 1),
                      'seed': a.seed, 'loss_first20': round(first, 4),
                      'loss_last20': round(last, 4), 'setup_s': round(setup, 1), 'eval_s': round(eval_s, 1),
                      'val_images': len(ds_val), 'eval_batch_size': a.eval_batch_size, 'threads': a.threads, 'lr': a.lr, 'batch_size': bs,
                      'load_avg_before': [round(x, 2) for x in load_before],
                      'load_avg_after': [round(x, 2) for x in os.getloadavg()], 'detector': str(a.detector),
                      'figure': a.out, 'panoptic_figure': a.panoptic_out, 'head': a.save_head,
                      'command': 'python bench/masks.py ' + ' '.join(sys.argv[1:])}
    if a.pack: pack_mask_head(model, a.pack, record)
    print(json.dumps(record))


if __name__ == '__main__':
    run()
