"""Write README.md from nbs/index.ipynb (quarto, which nbdev_readme needs, is not available offline).

Usage: python .ci/readme.py          # rewrite README.md
       python .ci/readme.py --check  # exit 1 if README.md is out of date
"""
import json, sys, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
nb = json.loads((root / 'nbs' / 'index.ipynb').read_text(encoding='utf-8'))
parts = []
for cell in nb['cells']:
    src = ''.join(cell['source']).strip()
    if cell['cell_type'] != 'markdown' or not src: continue
    parts.append(src.replace('](../images/', '](images/'))
text = ('<!-- Generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file. -->\n\n'
        + '\n\n'.join(parts) + '\n')
readme = root / 'README.md'
if '--check' in sys.argv:
    if readme.read_text(encoding='utf-8') != text:
        sys.exit('README.md is out of date with nbs/index.ipynb: run python .ci/readme.py')
    print('README.md matches nbs/index.ipynb')
else:
    readme.write_text(text, encoding='utf-8')
