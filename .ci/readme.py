"""Write README.md from nbs/index.ipynb (quarto, which nbdev_readme needs, is not available offline).

Usage: python .ci/readme.py          # rewrite README.md
       python .ci/readme.py --check  # exit 1 if README.md is out of date

Markdown cells are copied as they are; code cells the book shows (not marked `#| hide`) become ```python
blocks without their `#|` directives, so README carries the same code as the landing page.
"""
import json, re, sys, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
_DIRECTIVE = re.compile(r'^\s*#\|')


def code_block(src: str) -> str:
    "A code cell as README shows it: no `#|` directive lines; '' for a hidden cell."
    lines = src.splitlines()
    if any(re.match(r'^\s*#\|\s*hide\s*$', l) for l in lines): return ''
    code = '\n'.join(l for l in lines if not _DIRECTIVE.match(l)).strip()
    return f'```python\n{code}\n```' if code else ''


def readme_text(nb: dict) -> str:
    "README.md's text for the index notebook `nb`."
    parts = []
    for cell in nb['cells']:
        src = ''.join(cell['source']).strip()
        if not src: continue
        if cell['cell_type'] == 'markdown': parts.append(src.replace('](../images/', '](images/'))
        elif cell['cell_type'] == 'code' and (block := code_block(src)): parts.append(block)
    return ('<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n'
            + '\n\n'.join(parts) + '\n')


if __name__ == '__main__':
    nb = json.loads((root / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
    text = readme_text(nb)
    readme = root / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run python .ci/readme.py')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8')
