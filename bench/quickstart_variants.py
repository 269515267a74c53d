"""bench/quickstart.py with experimental changes that are not flags of detr_train (appendix evaluation, "The quick
start, measured"): each one patches the library for this process only, then runs bench/quickstart.py with the
remaining arguments. (One block per ResNet stage, also measured there, is a flag: `--backbone resnet10`.)

    python bench/quickstart_variants.py --freeze conv1,bn1,layer1 --threads 1 --minutes 15   # random stem and layer1 never train
    python bench/quickstart_variants.py --linear_decay --threads 1 --minutes 15              # learning rates fall linearly to 0
    python bench/quickstart_variants.py --aux_weight 0.5 --threads 1 --minutes 15            # auxiliary losses at half weight

--freeze P1,P2,..: the backbone parameters whose names start with one of these prefixes get no gradient (their batch
  norms still normalize with the batch's statistics); less backward work per step.
--linear_decay: after the warm-up, the learning rates fall linearly with the training time spent, to 0 at the end of
  --minutes, instead of the preset's division by 10 at 80 % of it ('budgeted training').
--aux_weight W: the losses of decoder layers 1 .. L-1 (the auxiliary decoding losses, paper §3.2) count W times
  their usual weight in the total; the last layer's are unchanged. W = 0 trains the heads on the last layer alone
  (the earlier layers still predict, so the per-layer report works). The printed training loss is this total.
This is a benchmark, not a test: nbdev_test does not run it.
"""
import argparse, runpy, sys, time
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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    p.add_argument('--freeze', default=None)
    p.add_argument('--linear_decay', action='store_true')
    p.add_argument('--aux_weight', type=float, default=None)
    p.add_argument('--minutes', type=float, default=10.0)
    p.add_argument('--warmup_steps', type=int, default=100)
    a, rest = p.parse_known_args()
    if a.linear_decay and '--lr_drop_time' in rest: p.error('--linear_decay replaces --lr_drop_time')
    patch(a, a.minutes)
    sys.argv = [str(Path(__file__).with_name('quickstart.py')), '--minutes', str(a.minutes),
                '--warmup_steps', str(a.warmup_steps), *rest]
    runpy.run_path(sys.argv[0], run_name='__main__')


if __name__ == '__main__':
    main()
