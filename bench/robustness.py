"""Is the quick-start preset tuned to the project's own dataset? Train it on COCO-format sets of simple shapes that
the project's generator (appendix shapes) did not draw, and on the generated set with a shorter budget (a slower
machine, in effect), then measure every run image by image with bench/quickstart.py:

    python bench/robustness.py                        # the three drawn sets at 10 minutes, the generated set at 5.5 (~50 min)
    python bench/robustness.py --only small,wide --minutes 3
    python bench/robustness.py --quick                # a smoke run: 64 training images, 0.3 minutes each

The sets are drawn by this script, with its own shapes, colours and backgrounds: 3 classes (ellipse, rectangle,
triangle, of random aspect, rotation and colour, so that only the outline tells the class), 1 to 4 objects per image,
backgrounds of two-colour gradients with noise and a few thin lines that are not objects, 1500 training and 150
validation images each, and image sizes unlike the generated set's 160-320 pixels:

    small   sides of 96 to 144 pixels       (the preset scales the shorter side to 128: a small upscale)
    large   sides of 320 to 480 pixels      (a large downscale)
    wide    twice as wide as high, heights 120 to 200 (scaled to 80 x 160 by the preset's 160-pixel cap)

Each set is written once under --data and checked with the library's `dataset_report` (appendix train_command) before
training. Every run uses `detr_train --preset quickstart --train_ann ... --val_ann ... --weights_backbone none` (random
init, as the quick start), nothing else changed, in float32
unless this CPU has native bf16. The table gives the epochs, seconds per epoch and bench/quickstart.py's per-image
AP / AP50, duplicate rate and NMS gain; the last line is one JSON record. A benchmark, not a test: nbdev_test does not run it.
"""
import argparse, json, subprocess, sys, time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from annotated_detr.shapes import _box_iou_np as iou, _cover as cover   # box geometry only; the drawing is ours

CATEGORIES = [{'id': 1, 'name': 'ellipse', 'supercategory': 'shape'}, {'id': 2, 'name': 'rectangle', 'supercategory': 'shape'},
              {'id': 3, 'name': 'triangle', 'supercategory': 'shape'}]
VARIANTS = {'small': dict(sides=(96, 144)), 'large': dict(sides=(320, 480)), 'wide': dict(heights=(120, 200), aspect=2.0)}


def outline(kind, cx, cy, size, aspect, angle):
    "Corners [k, 2] of a shape of extent `size` (its longer side), `aspect` = shorter / longer, rotated by `angle`."
    a, b = size / 2, size * aspect / 2
    if kind == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        pts = np.stack([a * np.cos(t), b * np.sin(t)], 1)
    elif kind == 'rectangle': pts = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    else: pts = np.array([[-a, b], [a, b], [a * np.tan(angle) / 3, -b]])   # a triangle whose apex leans with the angle
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) + [cx, cy]


def draw_image(rng, w, h):
    "One image with 1 to 4 objects: (PIL image, [(category id, polygon)])."
    top, bottom = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    pixels = top + (bottom - top) * ramp + rng.normal(0, 8, (h, w, 3))
    canvas = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(canvas)
    for _ in range(rng.integers(0, 4)):                                  # clutter: thin lines, not objects
        pen.line([tuple(rng.uniform(0, [w, h])) for _ in range(2)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=1)
    objects, boxes = [], []
    for _ in range(rng.integers(1, 5)):
        cat = int(rng.integers(1, 4))
        for _try in range(30):                                           # a place that overlaps the others little
            size = rng.uniform(0.15, 0.6) * min(w, h)
            cx, cy = rng.uniform(size / 2 + 1, w - size / 2 - 1), rng.uniform(size / 2 + 1, h - size / 2 - 1)
            poly = outline(CATEGORIES[cat - 1]['name'], cx, cy, size, rng.uniform(0.5, 1.0), rng.uniform(-0.6, 0.6))
            poly = poly.clip([0, 0], [w - 1, h - 1])
            box = np.concatenate([poly.min(0), poly.max(0)])
            if all(iou(box, b) < 0.2 and cover(box, b) < 0.4 for b in boxes): break   # none hides another
        else: continue
        background = pixels[int(cy) % h, int(cx) % w]
        while True:                                                      # a colour that stands out from the background
            colour = rng.integers(0, 256, 3)
            if np.abs(colour - background).sum() > 120: break
        pen.polygon([tuple(p) for p in poly], fill=tuple(int(v) for v in colour))
        objects.append((cat, poly)); boxes.append(box)
    return canvas, objects


def write_split(root, split, rng, n, first_id, sides=None, heights=None, aspect=None):
    "Draw `n` images into root/split/ with their COCO-format annotations beside them (a Roboflow export's layout)."
    (root / split).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id in range(first_id, first_id + n):
        if heights: h = int(rng.integers(heights[0], heights[1] + 1)); w = int(round(h * aspect))
        else: w, h = (int(v) for v in rng.integers(sides[0], sides[1] + 1, 2))
        canvas, objects = draw_image(rng, w, h)
        name = f'{image_id:06d}.jpg'
        canvas.save(root / split / name, quality=92)
        images.append({'id': image_id, 'file_name': name, 'width': w, 'height': h})
        for cat, poly in objects:
            x0, y0 = poly.min(0); x1, y1 = poly.max(0)
            x, y = poly[:, 0], poly[:, 1]
            anns.append({'id': len(anns) + 1 + 10 * first_id, 'image_id': image_id, 'category_id': cat, 'iscrowd': 0,
                         'bbox': [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                         'area': round(float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2), 2),
                         'segmentation': [[round(float(v), 2) for v in poly.reshape(-1)]]})
    path = root / split / '_annotations.coco.json'
    path.write_text(json.dumps({'images': images, 'annotations': anns, 'categories': CATEGORIES}))
    return path


def write_variant(root, name, seed, n_train, n_val):
    "Write (once) the variant's train and val splits; return their annotation files."
    root = Path(root) / name
    files = root / 'train' / '_annotations.coco.json', root / 'val' / '_annotations.coco.json'
    if all(f.exists() for f in files): return files
    for i, (split, n, first) in enumerate([('train', n_train, 1), ('val', n_val, n_train + 1)]):
        write_split(root, split, np.random.default_rng([seed, i]), n, first, **VARIANTS[name])
    return files


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--only', default='small,large,wide,slower', help='comma-separated runs: small, large, wide, slower')
    p.add_argument('--minutes', type=float, default=10., help='training budget of the drawn sets')
    p.add_argument('--slower_minutes', type=float, default=5.5, help='budget of the generated set (a machine 1.8x slower)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--data', default='runs/robustness/data', help='where the drawn sets are written (once)')
    p.add_argument('--output_dir', default=None, help='default: runs/robustness/<time>')
    p.add_argument('--quick', action='store_true', help='smoke run: 64/16 images, 0.3 minutes each')
    a = p.parse_args()
    from annotated_detr.data import CocoDetection
    from annotated_detr.train_command import dataset_report, format_report
    n_train, n_val = (64, 16) if a.quick else (1500, 150)
    data = Path(a.data) / ('quick' if a.quick else 'full')
    out = Path(a.output_dir or f"runs/robustness/{time.strftime('%Y%m%d-%H%M%S')}")
    quickstart = Path(__file__).with_name('quickstart.py')
    results = {}
    for k, name in enumerate(a.only.split(',')):
        if name == 'slower': flags, minutes = [], a.slower_minutes
        else:
            train, val = write_variant(data, name, seed=100 + k, n_train=n_train, n_val=n_val)
            for f in (train, val):   # the library's check of a user's dataset: unreadable images, bad boxes, unknown classes
                report = dataset_report(CocoDetection(f.parent, f), f.parent.name)
                print(f"{name}: {format_report(report)}", flush=True)
                if report['used'] != report['annotations']: sys.exit(f"{name}: the drawn set has annotations that cannot be used")
            # annotation files make a COCO-format run, which starts from ImageNet weights: the quick start's are random
            flags, minutes = ['--train_ann', str(train), '--val_ann', str(val), '--weights_backbone', 'none'], a.minutes
        if a.quick: minutes = 0.3
        cmd = [sys.executable, str(quickstart), '--minutes', str(minutes), '--threads', str(a.threads),
               '--output_dir', str(out / name), *flags]
        print('$', ' '.join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode: sys.exit(f"{name}: bench/quickstart.py failed:\n{done.stderr[-3000:]}")
        lines = done.stdout.strip().splitlines()
        print('\n'.join(lines[-14:]), flush=True)
        results[name] = dict(json.loads(lines[-1]), minutes=minutes)
    print('\n| run | minutes | epochs, s per epoch | AP / AP50 per image | duplicates | NMS gain, last layer |')
    print('|---|---|---|---|---|---|')
    for name, r in results.items():
        print(f"| {name} | {r['minutes']} | {r['epochs']}, {r['s_per_epoch']} | {r['AP']:.3f} / {r['AP50']:.3f} | "
              f"{100 * r['duplicates']:.1f} % | {r['nms_gain_last']:+.3f} |")
    print(json.dumps(results))


if __name__ == '__main__':
    main()
