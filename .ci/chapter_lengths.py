"""Print how long each notebook of the book is, as a reader of the rendered site sees it, and how many checks it makes.

    python .ci/chapter_lengths.py            # the table
    python .ci/chapter_lengths.py --check    # also exit 1 if a chapter is over 30,000 characters or the eight over 160,000

Visible characters: the source of every markdown and code cell that nbdev shows (cells marked `#| hide` are left out,
outputs are not counted). Checks: `assert` statements and `test_*(` calls in code cells, hidden ones included, since a
check moved to a hidden cell or an appendix is still a check.
"""
import json, re, sys
from pathlib import Path

CHAPTERS = ['00_data', '01_nested_tensor', '02_backbone', '03_position_encoding', '04_joiner', '05_transformer',
            '06_matcher_loss', '07_train']
CHAPTER_LIMIT, BOOK_LIMIT = 30_000, 160_000
_HIDE = re.compile(r'^\s*#\|\s*hide\s*$', re.M)
_CHECK = re.compile(r'\bassert\b|\btest_\w*\(')


def measure(path: Path) -> dict:
    "Cells, prose words, visible characters and checks of one notebook."
    cells = json.loads(path.read_text())['cells']
    visible = [c for c in cells if c['cell_type'] in ('markdown', 'code') and not _HIDE.search(''.join(c['source']))]
    prose = ' '.join(''.join(c['source']) for c in visible if c['cell_type'] == 'markdown')
    checks = sum(len(_CHECK.findall(''.join(c['source']))) for c in cells if c['cell_type'] == 'code')
    return dict(cells=len(cells), words=len(prose.split()), chars=sum(len(''.join(c['source'])) for c in visible),
                checks=checks)


def main(root='nbs', check=False) -> int:
    root = Path(root)
    rows = [(name, measure(root / f'{name}.ipynb')) for name in CHAPTERS]
    others = sorted(p for p in root.rglob('*.ipynb') if p.stem not in CHAPTERS and '.ipynb_checkpoints' not in p.parts)
    rows += [(str(p.relative_to(root).with_suffix('')), measure(p)) for p in others]
    print(f"| {'notebook':<28} | cells | prose words | visible characters | checks |")
    print(f"|{'-' * 30}|------:|------------:|-------------------:|-------:|")
    for name, m in rows:
        flag = ' (over 30,000)' if name in CHAPTERS and m['chars'] > CHAPTER_LIMIT else ''
        print(f"| {name:<28} | {m['cells']:>5} | {m['words']:>11,} | {m['chars']:>18,}{flag} | {m['checks']:>6} |")
    book = sum(m['chars'] for name, m in rows if name in CHAPTERS)
    print(f"\nchapters 00-07: {book:,} visible characters (aim: at most {BOOK_LIMIT:,}, none above {CHAPTER_LIMIT:,}); "
          f"checks in all notebooks: {sum(m['checks'] for _, m in rows)}")
    over = [name for name, m in rows if name in CHAPTERS and m['chars'] > CHAPTER_LIMIT]
    if check and (over or book > BOOK_LIMIT):
        print(f"chapter_lengths: too long: {', '.join(over) or 'the eight chapters together'}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(check='--check' in sys.argv[1:]))
