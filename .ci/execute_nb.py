"""Run notebooks top to bottom and save their outputs in place, as nbdev_test would run them.

Cells flagged with one of settings.ini's tst_flags (`#| slow`, `#| cuda`, `#| online`) or `#| eval: false`
are skipped, so a CPU machine without internet can refresh every committed output.
Usage: python .ci/execute_nb.py nbs/05_transformer.ipynb [more.ipynb ...]; then nbdev_clean.
"""
import os, re, sys, configparser, pathlib
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell

root = pathlib.Path(__file__).resolve().parent.parent
cfg = configparser.ConfigParser(); cfg.read(root / 'settings.ini')
flags = set(cfg['DEFAULT'].get('tst_flags', '').split())

def skip(cell):
    "True for code cells carrying a test flag or `eval: false` among their leading `#|` directives."
    if cell.cell_type != 'code': return False
    for line in cell.source.splitlines():
        m = re.match(r'\s*#\|\s*(.*)', line)
        if not m: break
        d = m.group(1).strip()
        if d in flags or re.fullmatch(r'eval:\s*false', d): return True
    return False

for p in map(pathlib.Path, sys.argv[1:]):
    p = p.resolve()
    nb = read_nb(p)
    cwd = os.getcwd(); os.chdir(p.parent)
    try: CaptureShell().run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)
    write_nb(nb, p)
    print(f'executed {p.name}')
