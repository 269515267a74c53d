"""Time one training step of the quick-start preset (forward, matching, loss, backward, AdamW) on real batches of the
generated shapes, for the two levers of appendix train_command and appendix query_groups:

    python bench/quickstart_step.py            # mixed vs one-orientation batches, then 1, 4 and 8 query groups

Mixed batches are eight consecutive images of the training split (mostly padded to 160 x 160); one-orientation
batches are eight landscape or eight portrait images (128 x 160 or 160 x 128), as `AspectBatchSampler` makes them.
Each configuration runs 2 warm-up and 10 timed steps, twice, alternating, on 2 threads (`--threads`).
This is a benchmark, not a test: nbdev_test does not run it.
"""
import argparse, time
import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--groups', type=int, nargs='+', default=[1, 4, 8])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from annotated_detr.nested_tensor import collate_fn
    from annotated_detr.train import build_training, make_optimizer
    from annotated_detr.train_command import parse_args, data_root, _build_data, image_orientations
    from annotated_detr.query_groups import QueryGroups, GroupedCriterion
    args = parse_args(['--preset', 'quickstart'])
    ds = _build_data(args, data_root(args))[0]
    orient = image_orientations(ds)
    first = list(range(96))
    land = [i for i in range(len(ds)) if orient[i] == 0][:48]
    port = [i for i in range(len(ds)) if orient[i] == 1][:48]
    batch = lambda idx: collate_fn([ds[i] for i in idx])
    mixed = [batch(first[k:k + 8]) for k in range(0, 96, 8)]
    grouped = [batch(land[k:k + 8]) for k in range(0, 48, 8)] + [batch(port[k:k + 8]) for k in range(0, 48, 8)]

    def timer(groups):
        torch.manual_seed(0)
        model, crit, _ = build_training(args, 10)
        model = QueryGroups(model, groups).train()
        crit = GroupedCriterion(crit)
        opt = make_optimizer(model.detr, args.lr, args.lr_backbone, args.weight_decay)
        model.add_to_optimizer(opt)
        def run(batches):
            def step(x, t):
                ld = crit(model(x), t)
                loss = sum(ld[k] * crit.weight_dict[k] for k in ld if k in crit.weight_dict)
                opt.zero_grad(); loss.backward(); opt.step()
            for x, t in batches[:2]: step(x, t)
            t0 = time.perf_counter()
            for x, t in batches[2:]: step(x, t)
            return (time.perf_counter() - t0) / (len(batches) - 2) * 1000
        return run

    shapes = lambda bs: sorted({tuple(b[0].tensors.shape[-2:]) for b in bs})
    run1 = timer(1)
    for rep in range(2):
        print(f"mixed batches {run1(mixed):.0f} ms per step {shapes(mixed)}", flush=True)
        print(f"one-orientation batches {run1(grouped):.0f} ms per step {shapes(grouped)}", flush=True)
    runs = {g: timer(g) for g in a.groups}
    for rep in range(2):
        for g in a.groups: print(f"{g} query group(s), one-orientation batches: {runs[g](grouped):.0f} ms per step", flush=True)


if __name__ == '__main__':
    main()
