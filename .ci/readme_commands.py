"""Run every command block of README.md end to end on tiny generated data, as a user would type it (CI step).

Usage: python .ci/readme_commands.py               # run them all, from the repository root (about 3 min on 2 cores)
       python .ci/readme_commands.py --list        # the plan: each block, what is added to it, or why it is not run
       python .ci/readme_commands.py --only NAME   # one block (and what it needs, where PLAN says so)
       python .ci/readme_commands.py --print NAME  # the block's command as README has it (for .ci/run)

Each fenced ```sh or ```python block of README.md stands right after a marker line `<!-- ci:NAME -->` (written in
nbs/index.ipynb). PLAN, below, is the one place that says what this step adds to each block:
- flags appended to a command line, flags a user could type (a data path, a tiny model, one epoch);
- SUBSTITUTIONS, the few words replaced where no flag can say it (one GPU process instead of eight);
- the released weights, which cannot be downloaded here: random weights of the same architecture, saved in the
  released file's format and name into a fresh torch.hub cache (TORCH_HOME), so that README's
  `detr_resnet50(pretrained=True)` runs its own code path from the cache;
- or why a block is not run by this step.
The commands run in the repository root (README's commands assume a clone), one after another, each with a time
limit; they must exit 0 and write the files README says they write. A block without a marker or a plan entry fails
the step, and a failure names the block, its command and the command's last line of output.
Files the commands write into the clone (runs/, photo*, detr.onnx, ...) are removed afterwards; the step refuses to
start where one already exists, so that it never overwrites a user's run.
"""
from __future__ import annotations
import os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = '{data}'     # in appended flags: the tiny COCO-format dataset this step generates (8 training images)
SMALL = '{small}'   # the same kind, 2 training images, for the COCO recipe's 800-pixel images

# A tiny detector for the COCO recipe (ResNet-18 from random weights, d = 64): the paper's recipe otherwise.
TINY_COCO_MODEL = ('--weights_backbone none --backbone resnet18 --hidden_dim 64 --nheads 4 --enc_layers 1 --dec_layers 2 '
                   '--dim_feedforward 128 --num_queries 10 --device cpu')

# name -> {'lines': [flags appended to each line of the block, in order], 'writes': [[files each line writes]],
#          'prints': [[text each line prints]], 'setup': what a Python block needs first} or {'skip': why}
PLAN = {
    'quickstart-command': dict(lines=[f'--coco_path {DATA} --epochs 1'],
                               writes=[['runs/quickstart/checkpoint.pth', 'runs/quickstart/log.txt',
                                        'runs/quickstart/history.png', 'runs/quickstart/predictions.png']],
                               prints=[['Average Precision']]),
    'test-command': dict(skip=".ci/run's `install` and `nbdev_test` steps run this very command (read from README)"),
    'resume-eval-commands': dict(lines=[f'--coco_path {DATA} --epochs 2', f'--coco_path {DATA}'],
                                 writes=[['runs/quickstart/checkpoint.pth', 'runs/quickstart/log.txt'], []],
                                 prints=[['epoch 1:'], ['Average Precision']]),
    'detect-command': dict(lines=['--checkpoint runs/quickstart/checkpoint.pth --json'],
                           writes=[['photo_detr.png', 'photo_detr.json', 'detections_coco.json']],
                           prints=[['photo.jpg:']]),
    'finetune-command': dict(lines=[f'--coco_path {DATA} --pretrained runs/quickstart/checkpoint.pth --preset quickstart '
                                    f'--epochs 1'],
                             writes=[['runs/finetune/checkpoint.pth', 'runs/finetune/log.txt']],
                             prints=[['Average Precision']]),
    'coco-recipe-command': dict(lines=[f'--coco_path {SMALL} {TINY_COCO_MODEL} --batch_size 2 --epochs 1'],
                                writes=[['runs/r50/checkpoint.pth', 'runs/r50/log.txt', 'runs/r50/predictions.png']],
                                prints=[['Average Precision']]),
    'masks-commands': dict(lines=[f'--coco_path {DATA} --epochs 1', ''],
                           writes=[['runs/masks/checkpoint.pth', 'runs/masks/masks.png'], ['photo_detr.png']],
                           prints=[['masks:'], ['photo.png:']]),
    'export-command': dict(lines=[''], writes=[['detr.onnx']], prints=[['']]),
    'docs-command': dict(skip=".ci/run's `site` step runs this very command (read from README), then checks the pages"),
    'detect-python': dict(setup='released'),
    'segment-python': dict(setup='released'),
    'onnx-python': dict(setup=''),
    'package-imports': dict(setup=''),
    'package-example': dict(setup=''),
}
# Words replaced in a command, where no appended flag can say it: CI has one CPU, not eight GPUs.
SUBSTITUTIONS = {'--nproc_per_node=8': '--nproc_per_node=1'}
# Files README's commands write into the clone, removed afterwards.
WRITTEN = ['runs', 'photo.jpg', 'photo.png', 'photo_detr.png', 'photo_detr.json', 'detections_coco.json', 'detr.onnx']
TIME_LIMIT = 300   # seconds, one command


def blocks(readme: str) -> list:
    "README's fenced blocks: (marker name or None, language, code, line number of the fence)."
    lines, found, i = readme.splitlines(), [], 0
    while i < len(lines):
        m = re.match(r'^```(\w+)\s*$', lines[i])
        if not m: i += 1; continue
        j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith('```'))
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), '')
        name = re.fullmatch(r'<!-- ci:([\w-]+) -->', before)
        found.append((name and name.group(1), m.group(1), '\n'.join(lines[i + 1:j]), i + 1))
        i = j + 1
    return found


def command_lines(code: str, extra: list) -> list:
    "The block's command lines with SUBSTITUTIONS made and each line's flags appended."
    cmds = [l.strip() for l in code.splitlines() if l.strip() and not l.strip().startswith('#')]
    if len(cmds) != len(extra): raise SystemExit(f"PLAN lists {len(extra)} line(s) of flags for a block of {len(cmds)}: {cmds}")
    out = []
    for cmd, flags in zip(cmds, extra):
        for old, new in SUBSTITUTIONS.items(): cmd = cmd.replace(old, new)
        out.append(f'{cmd} {flags}'.strip())
    return out


def make_data(work: Path) -> dict:
    "The tiny COCO-format datasets (the generated shapes: 8 or 2 training images, 2 or 1 for validation), README's photos."
    from annotated_detr.shapes import make_shapes_dataset
    data = make_shapes_dataset(work / 'data', seed=0, n_train=8, n_val=2)
    small = make_shapes_dataset(work / 'small', seed=1, n_train=2, n_val=1)
    from PIL import Image
    val = sorted((data / 'val2017').iterdir())[0]
    Image.open(val).convert('RGB').save(ROOT / 'photo.jpg', quality=95)
    Image.open(val).convert('RGB').save(ROOT / 'photo.png')
    return {DATA: str(data), SMALL: str(small)}


def released_weights(hub: Path) -> None:
    "Random weights of the released R50 detector and panoptic model, in their files' format and names, in `hub`'s cache."
    import torch
    from annotated_detr.checkpoints import CHECKPOINTS, detr_resnet50
    from annotated_detr.segmentation import PANOPTIC_CHECKPOINTS, detr_resnet50_panoptic
    (hub / 'checkpoints').mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for fname, model in ((CHECKPOINTS['detr_resnet50'][0], detr_resnet50()),
                         (PANOPTIC_CHECKPOINTS['detr_resnet50_panoptic'][0], detr_resnet50_panoptic())):
        torch.save({'model': model.state_dict()}, hub / 'checkpoints' / fname)   # the released files' layout


def last_line(text: str) -> str:
    "The output's last line that says something: its last error line if any (torchrun ends with a frame of '='), else its last."
    lines = [l.strip() for l in text.splitlines() if l.strip() and not re.fullmatch(r'[-=*_ ]+', l.strip())]
    errors = [l for l in lines if re.search(r'\berror\b', l, re.I)]
    return (errors or lines or ['(no output)'])[-1]


def run(name: str, cmd: list|str, env: dict, writes=(), prints=(), shell=True, shown=None) -> float:
    "Run one command in the clone; fail the step, naming the block, if it exits non-zero or misses a promised file."
    start = time.time()
    shown = shown or cmd
    print(f'--- [{name}] {shown}', flush=True)
    try:
        p = subprocess.run(cmd, shell=shell, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired as e:
        fail(name, shown, f'did not finish in {TIME_LIMIT} s', (e.stdout or b'').decode(errors='replace') if isinstance(e.stdout, bytes) else (e.stdout or ''))
    out = p.stdout + p.stderr
    if p.returncode != 0: fail(name, shown, f'exited {p.returncode}', out)
    for f in writes:
        path = ROOT / f
        if not path.exists() or path.stat().st_mtime < start - 1: fail(name, shown, f'did not write {f}', out)
    for text in prints:
        if text not in p.stdout: fail(name, shown, f'did not print {text!r}', out)
    print(f'    ok in {time.time() - start:.0f} s: {last_line(out)[:150]}', flush=True)
    return time.time() - start


def fail(name: str, cmd: str, what: str, out: str) -> None:
    line = next(l for n, _, _, l in BLOCKS if n == name)
    sys.exit(f"README block '{name}' (README.md line {line}) failed: `{cmd}` {what}; its last line: {last_line(out)}")


README = (ROOT / 'README.md').read_text(encoding='utf-8')
BLOCKS = blocks(README)


def check_plan() -> None:
    "Every block has a marker and a plan entry, and every plan entry a block."
    names = [n for n, *_ in BLOCKS]
    unmarked = [f'README.md line {l} ({lang})' for n, lang, _, l in BLOCKS if n is None]
    if unmarked: sys.exit(f"README blocks without a `<!-- ci:NAME -->` marker line before them: {', '.join(unmarked)}")
    if missing := [n for n in names if n not in PLAN]: sys.exit(f"README blocks with no entry in PLAN of {__file__}: {missing}")
    if stale := [n for n in PLAN if n not in names]: sys.exit(f"PLAN entries with no README block: {stale}")
    if dup := {n for n in names if names.count(n) > 1}: sys.exit(f"markers used twice in README: {sorted(dup)}")


def main() -> None:
    check_plan()
    if '--print' in sys.argv:
        name = sys.argv[sys.argv.index('--print') + 1]
        print(next(code for n, _, code, _ in BLOCKS if n == name).strip())
        return
    if '--list' in sys.argv:
        for name, lang, code, line in BLOCKS:
            plan = PLAN[name]
            print(f'[{name}] README.md line {line}, {lang}')
            if 'skip' in plan: print(f'    not run here: {plan["skip"]}'); continue
            if lang == 'python':
                print('    run as written' + (' (released weights: random ones of the same architecture in a fresh '
                                               'torch.hub cache)' if plan['setup'] == 'released' else ''))
                continue
            for cmd in command_lines(code, plan['lines']): print(f'    {cmd}')
        return
    only = sys.argv[sys.argv.index('--only') + 1].split(',') if '--only' in sys.argv else None
    if only and (unknown := [n for n in only if n not in PLAN]): sys.exit(f"--only: no README block named {unknown}")
    if there := [f for f in WRITTEN if (ROOT / f).exists()]:
        sys.exit(f"{', '.join(there)} already exist in {ROOT}: this step writes them; move them away, or run it in a fresh clone")
    work = Path(tempfile.mkdtemp(prefix='readme_commands_'))
    env = {**os.environ, 'TORCH_HOME': str(work / 'torch'), 'PYTHONUNBUFFERED': '1'}
    t0, times = time.time(), {}
    try:
        data = make_data(work)
        for name, lang, code, line in BLOCKS:
            plan = PLAN[name]
            if only and name not in only: continue
            if 'skip' in plan: print(f'--- [{name}] not run here: {plan["skip"]}'); continue
            if lang == 'sh':
                flags = [f.replace(DATA, data[DATA]).replace(SMALL, data[SMALL]) for f in plan['lines']]
                cmds = command_lines(code, flags)
                times[name] = sum(run(name, c, env, w, p) for c, w, p in zip(cmds, plan['writes'], plan['prints']))
            elif lang == 'python':
                if plan['setup'] == 'released': released_weights(work / 'torch' / 'hub')
                script = work / f'{name}.py'
                script.write_text(code + '\n')
                times[name] = run(name, [sys.executable, str(script)], env, shell=False,
                                  shown=f'python <<{code.strip().splitlines()[-1]}>>')
            else: sys.exit(f"README block '{name}' (line {line}) is ```{lang}: this step runs sh and python blocks only")
    finally:
        for f in WRITTEN:
            p = ROOT / f
            if p.is_dir(): shutil.rmtree(p, ignore_errors=True)
            elif p.exists(): p.unlink()
        shutil.rmtree(work, ignore_errors=True)
    skipped = sum('skip' in PLAN[n] for n, *_ in BLOCKS if not only or n in only)
    print(f"README: {len(times)} blocks run, {skipped} run by other steps of .ci/run, in {time.time() - t0:.0f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in times.items())})")


if __name__ == '__main__':
    main()
