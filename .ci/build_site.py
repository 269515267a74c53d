#!/usr/bin/env python
"""Build the book as a static website from the committed notebooks, without executing them.

    pip install -e ".[docs]" && python .ci/build_site.py      # -> _site/index.html

Pages, in reading order: nbs/index.ipynb, the chapters nbs/NN_*.ipynb (sorted), the appendices
nbs/appendix/*.ipynb (sorted, picked up automatically), then an API reference of every exported name.
Notebooks are staged into _build/site_src first: `#| hide` (and `#| include: false`) cells are dropped,
`#|` directive lines are stripped from the code shown, `#| echo: false` / `#| output: false` hide the input /
output, relative figure paths (`../images/x.png`) are checked and copied next to the staged page, and the
index gets the table of contents. Sphinx (myst-nb, sphinx-book-theme, MathJax from a PyPI package) then builds
_site/ with warnings as errors, so a missing figure or a broken cross-reference fails the build.
"""
import argparse, json, os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS, IMAGES = ROOT/'nbs', ROOT/'images'
STAGE, DOCTREES, HTML, OUT = ROOT/'_build'/'site_src', ROOT/'_build'/'doctrees', ROOT/'_build'/'html', ROOT/'_site'
LIB = 'annotated_detr'

def _visible(p: Path) -> bool: return not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)

def book_notebooks() -> dict:
    "The notebooks of the book by part, each list in reading order: {'index': [...], 'chapters': [...], 'appendices': [...]}."
    chapters = sorted(p for p in NBS.glob('*.ipynb') if p.name != 'index.ipynb' and _visible(p))
    appendices = sorted(p for p in (NBS/'appendix').glob('**/*.ipynb') if _visible(p))
    return {'index': [NBS/'index.ipynb'], 'chapters': chapters, 'appendices': appendices}

def page_of(nb: Path) -> str:
    "The page name (no suffix) of a notebook in the site: nbs/00_data.ipynb -> '00_data', nbs/appendix/x.ipynb -> 'appendix/x'."
    return nb.relative_to(NBS).with_suffix('').as_posix()

def book_pages() -> list:
    "Every page of the book in reading order (prev/next follow it): the notebooks, then 'api'."
    parts = book_notebooks()
    return [page_of(p) for k in ('index', 'chapters', 'appendices') for p in parts[k]] + ['api']

# ---------------------------------------------------------------- notebook staging
DIRECTIVE = re.compile(r'^\s*#\|\s?(.*)$')
def directives(src: str) -> dict:
    "nbdev/Quarto `#|` directives of a code cell: {'hide': '', 'echo': 'false', 'export': '', ...}."
    out = {}
    for line in src.splitlines():
        m = DIRECTIVE.match(line)
        if not m: continue
        body = m.group(1).strip()
        if ':' in body: k, v = body.split(':', 1)
        else: k, _, v = body.partition(' ')
        out[k.strip().lower()] = v.strip().lower()
    return out

def strip_directives(src: str) -> str:
    "The code of a cell without its `#|` lines (and without the blank lines they leave at the top)."
    return '\n'.join(l for l in src.splitlines() if not DIRECTIVE.match(l)).strip('\n')

def is_hidden(d: dict) -> bool: return 'hide' in d or d.get('include') == 'false'

MD_IMG = re.compile(r'(!\[[^\]]*\]\()(\s*<?)([^)\s>]+)')         # ![alt](path "title")
HTML_IMG = re.compile(r'(<img\b[^>]*?\bsrc=["\'])([^"\']+)', re.I)

def _restage_path(link: str, nb: Path, staged_nb: Path, copies: dict) -> str:
    "Where a relative file link of `nb` points from `staged_nb`; records the file to copy. Absolute and URL links are kept."
    if re.match(r'^([a-z][a-z0-9+.-]*:|/|#)', link, re.I): return link
    target = (nb.parent/link).resolve()
    if not target.is_file(): raise FileNotFoundError(f'{nb.relative_to(ROOT)}: figure {link} -> {target} does not exist')
    rel = target.relative_to(NBS) if target.is_relative_to(NBS) else target.relative_to(ROOT)
    copies[STAGE/rel] = target
    return os.path.relpath(STAGE/rel, staged_nb.parent).replace(os.sep, '/')

def stage_notebook(nb: Path, dest: Path, copies: dict, extra_md: str = '') -> dict:
    "Copy `nb` to `dest` as the site shows it; returns counts of what was dropped."
    d = json.loads(nb.read_text(encoding='utf-8'))
    cells, dropped = [], 0
    for c in d['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'raw': dropped += 1; continue   # Quarto front matter and the like: not for the page
        if c['cell_type'] == 'markdown':
            src = MD_IMG.sub(lambda m: m.group(1) + m.group(2) + _restage_path(m.group(3), nb, dest, copies), src)
            src = HTML_IMG.sub(lambda m: m.group(1) + _restage_path(m.group(2), nb, dest, copies), src)
            cells.append({**c, 'source': src, 'metadata': {}})
            continue
        dirs = directives(src)
        if is_hidden(dirs): dropped += 1; continue
        code = strip_directives(src)
        outputs = [] if dirs.get('output') == 'false' else c.get('outputs', [])
        if not code.strip() and not outputs: dropped += 1; continue   # e.g. a cell holding only `#| default_exp`
        tags = ['remove-input'] if dirs.get('echo') == 'false' else []
        cells.append({**c, 'source': code, 'outputs': outputs, 'metadata': {'tags': tags} if tags else {}})
    if extra_md: cells.append({'cell_type': 'markdown', 'id': 'site-toc', 'metadata': {}, 'source': extra_md})
    d['cells'] = cells
    d['metadata'] = {**d.get('metadata', {}),
                     'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                     'language_info': {'name': 'python', 'pygments_lexer': 'ipython3'}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(d, indent=1), encoding='utf-8')
    return {'dropped': dropped, 'cells': len(cells)}

def toctree(caption: str, pages: list) -> str:
    return f'```{{toctree}}\n:hidden:\n:caption: {caption}\n\n' + '\n'.join(pages) + '\n```\n' if pages else ''

# ---------------------------------------------------------------- API reference
def exported_modules(parts: dict) -> list:
    "(module, page) for each notebook with `#| default_exp`, in reading order; the package's __init__ is left out."
    mods = []
    for k in ('index', 'chapters', 'appendices'):
        for nb in parts[k]:
            for c in json.loads(nb.read_text(encoding='utf-8'))['cells']:
                if c['cell_type'] != 'code': continue
                m = re.search(r'^\s*#\|\s*default_exp\s+(\S+)', ''.join(c['source']), re.M)
                if m and m.group(1) != '__init__': mods.append((m.group(1), page_of(nb))); break
    return mods

def api_page(parts: dict) -> str:
    "MyST text of the API reference: every name in each module's `__all__`, with signature, docstring and docments."
    import importlib, inspect
    lines = ['# API reference', '',
             f'Every name exported by `{LIB}`, module by module in the order of the book, with its signature, '
             'its docstring and the comment written beside each parameter. Each is importable from its module '
             f'(`from {LIB}.data import CocoDetection`), and the main ones from the top level (`from {LIB} import build_detr`).', '']
    for mod, page in exported_modules(parts):
        m = importlib.import_module(f'{LIB}.{mod}')
        lines += [f'## `{LIB}.{mod}`', '', f'Built in [{page}]({page}.ipynb).', '']
        for name in getattr(m, '__all__', []):
            obj, full = getattr(m, name), f'{LIB}.{mod}.{name}'
            directive = 'autoclass' if inspect.isclass(obj) else 'autofunction' if inspect.isroutine(obj) else 'autodata'
            long_value = directive == 'autodata' and len(repr(obj)) > 100
            lines += ['```{eval-rst}', f'.. {directive}:: {full}'] + (['   :no-value:'] if long_value else []) + ['```', '']
    return '\n'.join(lines)

# ---------------------------------------------------------------- build
def stage() -> dict:
    "Lay out _build/site_src: the processed notebooks, their figures, api.md. Returns a summary."
    if STAGE.exists(): shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    parts, copies, summary = book_notebooks(), {}, {}
    toc = toctree('Chapters', [page_of(p) for p in parts['chapters']]) + '\n' \
        + toctree('Appendices', [page_of(p) for p in parts['appendices']]) + '\n' + toctree('Reference', ['api'])
    for k in ('index', 'chapters', 'appendices'):
        for nb in parts[k]:
            summary[page_of(nb)] = stage_notebook(nb, STAGE/nb.relative_to(NBS), copies, toc if k == 'index' else '')
    for dest, src in copies.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    (STAGE/'api.md').write_text(api_page(parts), encoding='utf-8')
    return summary

def build(quiet: bool = True) -> None:
    summary = stage()
    for d in (HTML, OUT):
        if d.exists(): shutil.rmtree(d)
    # built under _build/ (myst-nb writes a jupyter_execute/ folder beside its output folder), then moved to _site/
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-W', '--keep-going', '-E', '-c', str(ROOT/'docs'),
           '-d', str(DOCTREES), str(STAGE), str(HTML)] + (['-q'] if quiet else [])
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    HTML.rename(OUT)
    (OUT/'.nojekyll').touch()   # GitHub Pages: serve _static/ and _images/ as they are
    pages = book_pages()
    missing = [p for p in pages if not (OUT/f'{p}.html').exists()]
    if missing: raise SystemExit(f'pages missing from {OUT}: {missing}')
    for p in pages: print(f'  {p}.html' + (f"  ({summary[p]['cells']} cells, {summary[p]['dropped']} hidden or empty dropped)" if p in summary else ''))
    print(f'built {len(pages)} pages into {OUT.relative_to(ROOT)}/')

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--verbose', action='store_true', help="show Sphinx's progress")
    build(quiet=not ap.parse_args().verbose)
