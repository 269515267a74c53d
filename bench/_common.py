"""Shared helpers for the benchmark scripts: HF baseline model, interleaved timing, load and memory."""
from __future__ import annotations
import os, sys, time, json, statistics, subprocess, resource, platform

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path: sys.path.insert(0, _ROOT)   # run from a clone without installing

import torch

EXAMPLE_SHAPES = [(3, 765, 512), (3, 608, 911)]  # the two running-example images of chapter 00
COCO_SHAPES = [(3, 800, 1066), (3, 800, 1200)]   # two COCO images at the evaluation size (shorter side 800)


def loadavg() -> str:
    "The 1/5/15-minute load average as a string."
    try: return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError: return "n/a"


def machine() -> str:
    "One line that names the CPU, its core count, torch and the thread count."
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"): cpu = line.split(":", 1)[1].strip(); break
    except OSError: pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def random_images(shapes, seed=0) -> list:
    "Normalized-looking random images, one per shape."
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def pad_batch(images):
    "Zero-pad to the largest H, W; returns (pixels [B,3,H0,W0], mask [B,H0,W0] True=padding)."
    B, H0, W0 = len(images), max(i.shape[1] for i in images), max(i.shape[2] for i in images)
    x = images[0].new_zeros(B, 3, H0, W0)
    mask = torch.ones(B, H0, W0, dtype=torch.bool)
    for k, im in enumerate(images):
        x[k, :, :im.shape[1], :im.shape[2]] = im
        mask[k, :im.shape[1], :im.shape[2]] = False
    return x, mask


def hf_detr(num_labels=91, aux_loss=False, backbone="resnet50", attn_implementation=None):
    "HuggingFace `DetrForObjectDetection` with DETR-R50's architecture and random weights, built offline."
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig
    import transformers; transformers.logging.set_verbosity_error()
    depths = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}[backbone]
    bc = ResNetConfig(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=depths,
                      layer_type="bottleneck", hidden_act="relu", downsample_in_bottleneck=False,
                      out_features=["stage4"])
    kw = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    cfg = DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=bc,
                     num_queries=100, num_labels=num_labels, d_model=256, encoder_layers=6, decoder_layers=6,
                     encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                     decoder_ffn_dim=2048, dropout=0.1, auxiliary_loss=aux_loss,
                     class_cost=1, bbox_cost=5, giou_cost=2, bbox_loss_coefficient=5,
                     giou_loss_coefficient=2, eos_coefficient=0.1, **kw)
    torch.manual_seed(0)
    return DetrForObjectDetection(cfg)


def n_params(m) -> int: return sum(p.numel() for p in m.parameters())


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    "Time each callable `repeats` times, alternating between them (order flips each round) after `warmup` calls each."
    for _ in range(warmup):
        for f in fns.values(): f()
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        for k in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter(); fns[k](); times[k].append(time.perf_counter() - t0)
    return times


def stats(ts) -> dict:
    "Median, quartiles, min and max of a list of seconds."
    ts = sorted(ts)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return dict(median=statistics.median(ts), q1=q[0], q3=q[2], min=ts[0], max=ts[-1], n=len(ts))


def fmt(s: dict, unit="s") -> str:
    "A stats dict as 'median (IQR q1-q3, min-max)'."
    return (f"{s['median']:.3f}{unit} (IQR {s['q1']:.3f}-{s['q3']:.3f}, min-max {s['min']:.3f}-{s['max']:.3f}, "
            f"n={s['n']})")


def report_ratio(times: dict, ours: str, theirs: str, goal: float | None = None, show: bool = True) -> float:
    "Print each timing (if `show`) and the ratio of medians ours/theirs (with the per-round ratios as a spread)."
    if show:
        for k, v in times.items(): print(f"  {k:>28s}: {fmt(stats(v))}")
    r = stats(times[ours])["median"] / stats(times[theirs])["median"]
    pair = sorted(a / b for a, b in zip(times[ours], times[theirs]))
    g = "" if goal is None else f"  goal <= {goal}: {'MET' if r <= goal else 'NOT MET'}"
    print(f"  ratio {ours}/{theirs} = {r:.3f} (per-round ratios min {pair[0]:.3f}, max {pair[-1]:.3f}){g}")
    return r


def rss_now_kb() -> int:
    "Current resident set size in KiB (Linux /proc)."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb() -> int: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_peak(run, repeats: int = 2) -> dict:
    "Peak RSS above the RSS just before: of the first call of `run()` and of a later (steady-state) call, MiB."
    import gc
    gc.collect()
    before = rss_now_kb(); reset_peak(); run(); first = vm_hwm_kb() - before
    for _ in range(repeats - 1):
        gc.collect(); before2 = rss_now_kb(); reset_peak(); run(); steady = vm_hwm_kb() - before2
    return dict(first_call_mib=round(first / 1024, 1), steady_mib=round(steady / 1024, 1),
                rss_before_mib=round(before / 1024, 1), peak_total_mib=round(peak_rss_kb() / 1024, 1))


def peak_in_subprocess(script: str, impl: str, extra=()) -> dict:
    "Run `python script --mem impl` in a fresh process (so peaks do not mix) and parse its JSON line."
    out = subprocess.run([sys.executable, script, "--mem", impl, *extra], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("MEM "): return json.loads(line[4:])
    raise RuntimeError(f"no MEM line from {script} --mem {impl}:\n{out.stdout}\n{out.stderr}")


def ours_build_detr():
    "`annotated_detr.transformer.build_detr` (BENCH_PROTO=<file> execs a prototype into the module while chapter 05 is unexported)."
    import annotated_detr.transformer as T
    if not hasattr(T, 'build_detr') and os.environ.get('BENCH_PROTO'):
        exec(compile(open(os.environ['BENCH_PROTO']).read(), os.environ['BENCH_PROTO'], 'exec'), T.__dict__)
    return T.build_detr


def reset_peak():
    "Reset the kernel's peak-RSS counter (VmHWM) of this process, so the next peak is of what follows."
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')


def vm_hwm_kb() -> int:
    "Peak RSS (VmHWM) of this process since start or the last `reset_peak`, KiB."
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM'): return int(line.split()[1])
    return peak_rss_kb()
