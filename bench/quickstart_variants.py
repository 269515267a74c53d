"""bench/quickstart.py with experimental changes that are not flags of detr_train (appendix evaluation, "The quick
start, measured"): each one patches the library for this process only, then runs bench/quickstart.py with the
remaining arguments. (One block per ResNet stage and half the channels, also measured there, are flags: `--backbone resnet10`,
`--backbone_width`.)

    python bench/quickstart_variants.py --freeze conv1,bn1,layer1 --threads 1 --minutes 15   # random stem and layer1 never train
    python bench/quickstart_variants.py --linear_decay --threads 1 --minutes 15              # learning rates fall linearly to 0
    python bench/quickstart_variants.py --aux_weight 0.5 --threads 1 --minutes 15            # auxiliary losses at half weight
    python bench/quickstart_variants.py --ema 0.99,0.995 --threads 1 --minutes 15            # also report weight averages
    python bench/quickstart_variants.py --augment flip --threads 1 --minutes 15              # training images flipped at random

--freeze P1,P2,..: the backbone parameters whose names start with one of these prefixes get no gradient (their batch
  norms still normalize with the batch's statistics); less backward work per step.
--linear_decay: after the warm-up, the learning rates fall linearly with the training time spent, to 0 at the end of
  --minutes, instead of the preset's division by 10 at 80 % of it ('budgeted training').
--aux_weight W: the losses of decoder layers 1 .. L-1 (the auxiliary decoding losses, paper §3.2) count W times
  their usual weight in the total; the last layer's are unchanged. W = 0 trains the heads on the last layer alone
  (the earlier layers still predict, so the per-layer report works). The printed training loss is this total.
--ema D1,D2,..: besides the trained weights, keep exponential moving averages of them (parameters and batch-norm
  statistics, one per decay D: avg = D * avg + (1 - D) * weights after every step, torch.optim.swa_utils.AveragedModel); after training each average is
  saved as checkpoint_ema<D>.pth beside checkpoint.pth (and ema<D>_epoch<k>.pth after each epoch) and gets the
  same report. Training itself is unchanged.
--augment flip|detr: the training images get only a random horizontal flip before the evaluation transform (flip),
  or DETR's whole augmentation of 00_data (detr: flip, then either the resize or a random crop and the resize, at
  the preset's sizes), whatever --no_augment says; the preset has augmented as 'detr' since it was measured against
  'flip' and no augmentation (appendix evaluation, "A faster machine"). Evaluation is unchanged.
This is a benchmark, not a test: nbdev_test does not run it.
"""
import argparse, runpy, sys, time
import torch
from pathlib import Path


def patch(a, minutes):
    import annotated_detr.backbone as B
    init = B.Backbone.__init__
    prefixes = tuple(p for p in (a.freeze or '').split(',') if p)

    def patched_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        frozen = [name for name, p in self.body.named_parameters() if prefixes and name.startswith(prefixes)]
        for name in frozen: self.body.get_parameter(name).requires_grad_(False)
        if prefixes: print(f"quickstart_variants: {len(frozen)} backbone tensors frozen ({', '.join(prefixes)})", file=sys.stderr)
    B.Backbone.__init__ = patched_init
    if a.linear_decay:
        import annotated_detr.train as T
        budget, steps = minutes * 60, [0]
        def linear(optimizer, drop_time, device):   # replaces the /10 drop; drop_time = training start + 0.8 budget
            steps[0] += 1
            if drop_time is None or steps[0] <= a.warmup_steps: return   # the preset's LinearLR warm-up runs first
            spent = time.time() - drop_time + 0.8 * budget
            for g in optimizer.param_groups: g['lr'] = g['initial_lr'] * max(1 - spent / budget, 0.)
        T._timed_drop = linear
        print(f"quickstart_variants: learning rates fall linearly to 0 over {minutes} minutes", file=sys.stderr)
    if a.aux_weight is not None:
        import annotated_detr.matcher_loss as M, annotated_detr.train as T
        build = M.build_criterion
        def scaled(*args, **kwargs):   # 07's build_training calls the name it imported into annotated_detr.train
            criterion = build(*args, **kwargs)
            for k in criterion.weight_dict:
                if k.rsplit('_', 1)[-1].isdigit(): criterion.weight_dict[k] *= a.aux_weight
            return criterion
        M.build_criterion = T.build_criterion = scaled
        print(f"quickstart_variants: auxiliary losses weigh {a.aux_weight} times as much", file=sys.stderr)
    if a.augment:
        import annotated_detr.train_command as C
        from torchvision.transforms import v2
        build = C._build_data
        def build_data(args, root):
            ds_train, ds_val = build(args, root)
            if ds_train is None: return ds_train, ds_val
            if a.augment == 'detr': ds_train.transforms = C._transforms(args, 'train', args.scales)
            else:   # the evaluation transform, its boxes made tv_tensors first so that the flip moves them too
                first, *rest = C._transforms(args, 'val', args.scales).transforms
                ds_train.transforms = v2.Compose([first, v2.RandomHorizontalFlip(0.5), *rest])
            return ds_train, ds_val
        C._build_data = build_data
        print(f"quickstart_variants: training augmentation {a.augment}", file=sys.stderr)


def averaged_state(averaged):
    "The state dict of an `AveragedModel`'s copy, under the model's own keys."
    return {k: v.detach().clone() for k, v in averaged.module.state_dict().items()}


def patch_ema(decays, snapshots):
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    import annotated_detr.train_command as C
    make, one_epoch = C.make_optimizer, C.train_one_epoch
    def make_optimizer(model, *args, **kwargs):
        optimizer = make(model, *args, **kwargs)
        if 'ema' not in snapshots:   # the training run's optimizer; later ones are the report's --eval
            # PyTorch's own averaging; use_buffers: the batch-norm statistics are averaged too
            snapshots['ema'] = {d: AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(d), use_buffers=True) for d in decays}
            optimizer.register_step_post_hook(lambda *_: [e.update_parameters(model) for e in snapshots['ema'].values()])
        return optimizer
    def train_one_epoch(*args, **kwargs):
        stats = one_epoch(*args, **kwargs)
        if 'ema' in snapshots: snapshots['epochs'].append({d: averaged_state(e) for d, e in snapshots['ema'].items()})
        return stats
    C.make_optimizer, C.train_one_epoch = make_optimizer, train_one_epoch
    print(f"quickstart_variants: moving averages with decays {decays}", file=sys.stderr)


def save_averages(snapshots, checkpoint):
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    out = []
    for d, averaged in snapshots['ema'].items():
        for e, snap in enumerate(snapshots['epochs']):
            torch.save({**ckpt, 'model': snap[d]}, checkpoint.with_name(f'ema{d}_epoch{e}.pth'))
        path = checkpoint.with_name(f'checkpoint_ema{d}.pth')
        torch.save({**ckpt, 'model': averaged_state(averaged)}, path)
        out.append(path)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument('--freeze', default=None)
    p.add_argument('--linear_decay', action='store_true')
    p.add_argument('--aux_weight', type=float, default=None)
    p.add_argument('--ema', default=None)
    p.add_argument('--augment', default=None, choices=('flip', 'detr'))
    p.add_argument('--minutes', type=float, default=10.0)
    p.add_argument('--warmup_steps', type=int, default=100)
    a, rest = p.parse_known_args()
    if a.linear_decay and '--lr_drop_time' in rest: p.error('--linear_decay replaces --lr_drop_time')
    patch(a, a.minutes)
    snapshots = {'epochs': []}
    if a.ema: patch_ema([float(d) for d in a.ema.split(',')], snapshots)
    script = str(Path(__file__).with_name('quickstart.py'))
    if a.ema and '--output_dir' not in rest: rest += ['--output_dir', f"runs/bench_quickstart/{time.strftime('%Y%m%d-%H%M%S')}"]
    sys.argv = [script, '--minutes', str(a.minutes), '--warmup_steps', str(a.warmup_steps), *rest]
    runpy.run_path(script, run_name='__main__')
    if a.ema:
        out = Path(rest[rest.index('--output_dir') + 1])
        threads = rest[rest.index('--threads') + 1] if '--threads' in rest else '2'
        for path in save_averages(snapshots, out / 'checkpoint.pth'):
            print(f"\n== the moving average {path.name} ==", flush=True)
            sys.argv = [script, '--checkpoint', str(path), '--threads', threads]
            runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
