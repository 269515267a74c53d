"""Data benchmark: images/second through the DETR training augmentation at COCO sizes.

Ours: `annotated_detr.data.CocoDetection` + `make_coco_transforms('train')` as shipped (decoding with
`torchvision.io` into a uint8 tensor, torchvision.transforms.v2 on tv_tensors). Legacy: the same recipe written
the pre-v2 way -- PIL decoding, a JSON index built by hand, `torchvision.transforms.functional` (v1) on PIL
images, and box arithmetic written by hand (flip, resize, crop, clamp, drop, normalize). A third variant,
`ours with PIL decoding`, is the library's dataset with its image loading swapped back to PIL, which isolates
the torchvision.io lever (`--no-pil` to skip it).

Both run in one process with `torch.set_num_threads(1)` (what a DataLoader worker gets), interleaved
rounds over the same images, same seed per round.

    python bench/data.py            # full run
    python bench/data.py --quick    # smoke run
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import loadavg, machine, stats, fmt  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402  (v1 functional API)
from PIL import Image  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---------------------------------------------------------------- the legacy baseline, written by hand
class LegacyCoco:
    "A COCO reader without pycocotools: a dict from image id to annotations, PIL decoding, absolute xyxy boxes."
    def __init__(self, img_folder, ann_file, transforms=None):
        data = json.loads(Path(ann_file).read_text())
        self.folder, self.transforms = Path(img_folder), transforms
        self.images = {im['id']: im for im in data['images']}
        self.anns = {i: [] for i in self.images}
        for a in data['annotations']: self.anns[a['image_id']].append(a)
        self.ids = sorted(self.images)

    def __len__(self): return len(self.ids)

    def __getitem__(self, i):
        iid = self.ids[i]
        with Image.open(self.folder / self.images[iid]['file_name']) as im: img = im.convert('RGB')
        w, h = img.size
        anns = [a for a in self.anns[iid] if not a.get('iscrowd', 0)]
        boxes = torch.tensor([a['bbox'] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]                      # x, y, w, h -> x0, y0, x1, y1
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        target = dict(boxes=boxes[ok],
                      labels=torch.tensor([a['category_id'] for a in anns], dtype=torch.int64)[ok],
                      area=torch.tensor([a['area'] for a in anns], dtype=torch.float32)[ok],
                      iscrowd=torch.zeros(int(ok.sum()), dtype=torch.int64),
                      image_id=torch.tensor([iid]), orig_size=torch.tensor([h, w]), size=torch.tensor([h, w]))
        return self.transforms(img, target) if self.transforms else (img, target)


def _pick(seq): return seq[int(torch.randint(len(seq), ()))]


class LegacyTransform:
    "DETR's augmentation with v1 functional ops on PIL images and hand-written box handling."
    def __init__(self, train=True, scales=tuple(range(480, 801, 32)), max_size=1333, crop_resize=(400, 500, 600),
                 crop_size=(384, 600)):
        self.train, self.scales, self.max_size = train, list(scales), max_size
        self.crop_resize, self.crop_size = list(crop_resize), crop_size

    @staticmethod
    def _resize(img, t, short, max_size):
        w, h = img.size
        img = TF.resize(img, short, max_size=max_size)   # shorter side -> short, longer side capped at max_size
        nw, nh = img.size
        sx, sy = nw / w, nh / h
        t['boxes'] = t['boxes'] * torch.tensor([sx, sy, sx, sy])
        t['area'] = t['area'] * (sx * sy)
        return img, t

    def _crop(self, img, t):
        W, H = img.size
        lo, hi = self.crop_size
        cw = int(torch.randint(min(lo, W), min(W, hi) + 1, ()))
        ch = int(torch.randint(min(lo, H), min(H, hi) + 1, ()))
        top, left = int(torch.randint(0, H - ch + 1, ())), int(torch.randint(0, W - cw + 1, ()))
        img = TF.crop(img, top, left, ch, cw)
        b = t['boxes']
        old = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        b = b - torch.tensor([left, top, left, top], dtype=b.dtype)
        b[:, 0::2] = b[:, 0::2].clamp(0, cw)
        b[:, 1::2] = b[:, 1::2].clamp(0, ch)
        new = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        t['area'] = (t['area'] * new / old.clamp(min=1e-6))[keep]
        t['boxes'], t['labels'], t['iscrowd'] = b[keep], t['labels'][keep], t['iscrowd'][keep]
        return img, t

    def __call__(self, img, target):
        t = dict(target)
        if self.train:
            if torch.rand(()) < 0.5:
                w = img.size[0]
                img = TF.hflip(img)
                b = t['boxes']
                t['boxes'] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
            if torch.rand(()) < 0.5:
                img, t = self._resize(img, t, _pick(self.scales), self.max_size)
            else:
                img, t = self._resize(img, t, _pick(self.crop_resize), None)
                img, t = self._crop(img, t)
                img, t = self._resize(img, t, _pick(self.scales), self.max_size)
        else:
            img, t = self._resize(img, t, max(self.scales), self.max_size)
        x = TF.normalize(TF.to_tensor(img), MEAN, STD)
        h, w = x.shape[-2:]
        b = t['boxes']
        cxcywh = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1)
        t['boxes'] = cxcywh / torch.tensor([w, h, w, h], dtype=torch.float32)
        t['size'] = torch.tensor([h, w])
        return x, t


# ---------------------------------------------------------------- ours (as shipped, and with PIL decoding)
def ours_dataset(root, image_set='train', pil=False):
    "The library's dataset and training transform; `pil=True` swaps its torchvision.io decoding back to PIL."
    from annotated_detr.data import CocoDetection, make_coco_transforms
    cls = CocoDetection
    if pil:
        class PilCocoDetection(CocoDetection):
            "The library's dataset with PIL decoding (the v2 transforms then run on a PIL image)."
            def _load_image(self, id):
                with Image.open(Path(self.root) / self.coco.imgs[id]['file_name']) as im: return im.convert('RGB')
        cls = PilCocoDetection
    return cls(Path(root) / f'{image_set}2017', Path(root) / 'annotations' / f'instances_{image_set}2017.json',
               transforms=make_coco_transforms(image_set))


def legacy_dataset(root, image_set='train'):
    return LegacyCoco(Path(root) / f'{image_set}2017', Path(root) / 'annotations' / f'instances_{image_set}2017.json',
                      transforms=LegacyTransform(train=image_set == 'train'))


def make_data(root, n):
    "The generated shapes dataset with COCO-sized images (sides 400..640 pixels, like COCO's 640x480)."
    from annotated_detr.shapes import make_shapes_dataset
    root = Path(root)
    meta = root / 'bench_meta.json'
    want = dict(n_train=n, n_val=8, min_side=400, max_side=640, max_objects=6, seed=0)
    if not (meta.exists() and json.loads(meta.read_text()) == want):
        make_shapes_dataset(root, **want)
        meta.write_text(json.dumps(want))
    return root


def check_val_equal(ours, legacy, n=4, img_tol=1e-4):
    "The deterministic (val) recipes of both pipelines give the same boxes and sizes, and images within `img_tol`."
    worst_img, worst_box = 0., 0.
    for i in range(min(n, len(legacy))):
        (xo, to), (xl, tl) = ours[i], legacy[i]
        assert xo.shape == xl.shape, (xo.shape, xl.shape)
        assert torch.equal(to['labels'], tl['labels']) and torch.equal(to['size'], tl['size'])
        worst_box = max(worst_box, (to['boxes'] - tl['boxes']).abs().max().item() if len(tl['boxes']) else 0.)
        worst_img = max(worst_img, (xo - xl).abs().max().item())
    assert worst_box < 1e-4, worst_box
    assert worst_img < img_tol, worst_img
    return worst_img, worst_box


def run_round(ds, seed):
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    for i in range(len(ds)): ds[i]
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--quick', action='store_true', help='8 images, 2 rounds')
    p.add_argument('--n', type=int, default=48, help='images per round')
    p.add_argument('--rounds', type=int, default=5)
    p.add_argument('--root', default=os.environ.get('BENCH_SHAPES_ROOT', '/tmp/annotated_detr_bench/shapes_coco'))
    p.add_argument('--no-pil', action='store_true', help="skip the variant of ours with PIL decoding")
    p.add_argument('--threads', type=int, default=1, help='torch threads (1 = a DataLoader worker)')
    a = p.parse_args()
    if a.quick: a.n, a.rounds = 8, 2
    torch.set_num_threads(a.threads)
    root = make_data(Path(a.root) / f'n{a.n}', a.n)

    KO, KP, KL = 'ours (torchvision.io + v2)', 'ours with PIL decoding (v2)', 'legacy (v1 + PIL + hand boxes)'
    ours, legacy = ours_dataset(root), legacy_dataset(root)
    wi, wb = check_val_equal(ours_dataset(root, 'val', pil=True), legacy_dataset(root, 'val'))
    print(f"check: val recipe, ours with PIL decoding == legacy (max |image diff| {wi:.1e}, max |box diff| {wb:.1e})")
    wi, wb = check_val_equal(ours_dataset(root, 'val'), legacy_dataset(root, 'val'), img_tol=0.1)
    print(f"check: val recipe, ours (torchvision.io) vs legacy: max |image diff| {wi:.3f} (normalized units; different "
          f"JPEG decoder and resize kernel), max |box diff| {wb:.1e}")
    pipes = {KO: ours, KL: legacy}
    if not a.no_pil: pipes[KP] = ours_dataset(root, pil=True)
    sizes = [tuple(ours[i][0].shape[-2:]) for i in range(min(3, len(ours)))]
    print(f"machine: {machine()}; images {a.n}/round (generated, sides 400-640), e.g. outputs {sizes}")
    print(f"load before: {loadavg()}")
    for ds in pipes.values(): run_round(ds, 123)   # warmup
    times = {k: [] for k in pipes}
    for r in range(a.rounds):
        for k in (list(pipes) if r % 2 == 0 else list(pipes)[::-1]):
            times[k].append(run_round(pipes[k], r))
    print(f"load after: {loadavg()}")
    ips = {}
    for k, ts in times.items():
        s = stats(ts)
        ips[k] = a.n / s['median']
        print(f"  {k:>32s}: {ips[k]:7.1f} images/s   (round time {fmt(s)})")
    print(f"  throughput ratio ours/legacy = {ips[KO] / ips[KL]:.3f} (higher is better)")
    if KP in ips:
        print(f"  throughput ratio ours with PIL decoding/legacy = {ips[KP] / ips[KL]:.3f}")
        print(f"  throughput ratio ours/ours with PIL decoding = {ips[KO] / ips[KP]:.3f} (the torchvision.io lever)")


if __name__ == '__main__':
    main()
