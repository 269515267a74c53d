#!/usr/bin/env python
"""Open the built book (_site/) in headless Chromium and check every page as a reader would get it.

    python .ci/build_site.py && python .ci/check_site.py            # screenshots -> _site_shots/
    python .ci/check_site.py --self-test                            # proves the check catches breakage

Per page: it loads with no console error, no failed request and no request leaving the machine; every
image loads (naturalWidth > 0); every internal link (and #anchor) resolves to a file of the site; all math is
typeset by MathJax without a TeX error (and a notebook with `$...$` in its text has typeset math); the first
figure of a notebook that has one is laid out and visible; code is highlighted; no `#|` directive line and no
`#| hide` cell shows; the page has its table of contents and the previous/next links of the reading order.
A screenshot of the top of each notebook page and of its first figure goes to _site_shots/ (not committed).
The site is served on 127.0.0.1 only; Chromium is Debian's (/usr/bin/chromium), driven through Playwright.
"""
import argparse, functools, html, http.server, json, os, re, shutil, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlsplit, unquote

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_site import ROOT, OUT, NBS, book_notebooks, book_pages, page_of, directives, is_hidden, strip_directives, MD_IMG, HTML_IMG

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')   # Debian's; another build can be named by the CHROMIUM variable
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']
SHOTS = ROOT/'_site_shots'

# ---------------------------------------------------------------- what each page should show, from its notebook
MATH = re.compile(r'\$\$.+?\$\$|(?<![\\$])\$[^$\n]+\$', re.S)
def expectations(nb: Path) -> dict:
    "From the notebook itself: how many figures it shows, whether its text has math, its hidden cells' code."
    cells = json.loads(nb.read_text(encoding='utf-8'))['cells']
    figures, math, hidden, code = 0, False, [], False
    for c in cells:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            text = re.sub(r'```.*?```|`[^`\n]*`', '', src, flags=re.S)   # a $ inside code is not math
            figures += len(MD_IMG.findall(src)) + len(HTML_IMG.findall(src))
            math = math or bool(MATH.search(text))
        elif c['cell_type'] == 'code':
            d = directives(src)
            if is_hidden(d):
                if strip_directives(src).strip(): hidden.append(strip_directives(src).strip())
                continue
            code = code or bool(strip_directives(src).strip())
            if d.get('output') != 'false':
                figures += sum(any(k.startswith('image/') for k in o.get('data', {})) for o in c.get('outputs', []))
    return {'figures': figures, 'math': math, 'hidden': hidden, 'code': code}

# ---------------------------------------------------------------- serving and link resolution
def serve(site: Path):
    "A quiet HTTP server for `site` on 127.0.0.1 (a free port) in a daemon thread; returns (server, base URL)."
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_address[1]}/'

@functools.lru_cache(maxsize=None)
def ids_in(path: Path) -> frozenset:
    return frozenset(html.unescape(m) for m in re.findall(r'\bid="([^"]+)"', path.read_text(encoding='utf-8', errors='replace')))

def check_link(site: Path, base: str, href: str):
    "None if an internal link resolves to a file of the site (and its #anchor to an id there), else why not."
    path = unquote(urlsplit(href).path)[len(urlsplit(base).path):]
    target = site/path
    if path == '' or path.endswith('/'): target = target/'index.html'
    if not target.is_file(): return f'broken link {href} (no file {path or "index.html"})'
    frag = unquote(urlsplit(href).fragment)
    if frag and target.suffix == '.html' and frag not in ids_in(target): return f'broken anchor {href}'
    return None

# ---------------------------------------------------------------- the browser
IN_PAGE = r"""async () => {
  const out = {};
  // math: wait for MathJax to finish, then every math element must hold typeset output and no TeX error
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const maths = [...document.querySelectorAll('span.math, div.math')];
  out.math = maths.length;
  out.mathTypeset = maths.filter(m => m.querySelector('mjx-container')).length;
  out.mathErrors = document.querySelectorAll('mjx-merror, [data-mjx-error]').length;
  out.mathjax = !!(window.MathJax && MathJax.version);
  // images: make lazy ones load, then every <img> must have decoded pixels
  const imgs = [...document.images];
  imgs.forEach(i => { i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  out.images = imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  // the first figure of the article: loaded, laid out, visible
  const fig = document.querySelector('article.bd-article img');
  if (fig) {
    fig.scrollIntoView({block: 'center'});
    const r = fig.getBoundingClientRect(), s = getComputedStyle(fig);
    out.figure = {src: fig.getAttribute('src'), naturalWidth: fig.naturalWidth, width: Math.round(r.width),
                  height: Math.round(r.height), visible: fig.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})
                  && s.visibility !== 'hidden' && r.width > 0 && r.height > 0};
    window.scrollTo(0, 0);
  }
  out.articleImages = document.querySelectorAll('article.bd-article img').length;
  out.links = [...document.querySelectorAll('a[href]')].map(a => a.href);
  out.codeInputs = [...document.querySelectorAll('div.cell_input pre')].map(p => p.innerText);
  out.highlighted = document.querySelectorAll('div.highlight pre span.k, div.highlight pre span.kn, div.highlight pre span.n').length;
  out.toc = document.querySelectorAll('nav#pst-page-toc-nav a').length;
  out.headings = document.querySelectorAll('article.bd-article section section > h2, article.bd-article h2').length;
  out.prev = (document.querySelector('a.left-prev') || {}).href || null;
  out.next = (document.querySelector('a.right-next') || {}).href || null;
  return out;
}"""

def norm_code(s: str) -> str: return '\n'.join(l.rstrip() for l in s.strip().splitlines())

def check_page(ctx, site: Path, base: str, name: str, exp: dict | None, order: list, shots: Path | None) -> tuple:
    "Check one page; returns (problems, summary line)."
    problems, events = [], []
    page = ctx.new_page()
    page.on('console', lambda m: m.type == 'error' and events.append(f'console error: {m.text}'))
    page.on('pageerror', lambda e: events.append(f'page error: {e}'))
    page.on('requestfailed', lambda r: not r.url.startswith(('http://127.0.0.1', 'data:')) or
            events.append(f'request failed: {r.url} ({r.failure})'))
    page.on('response', lambda r: r.status >= 400 and events.append(f'HTTP {r.status}: {r.url}'))
    resp = page.goto(base + f'{name}.html', wait_until='load', timeout=60_000)
    if resp is None or resp.status != 200: problems.append(f'page did not load: {resp and resp.status}')
    r = page.evaluate(IN_PAGE)
    page.wait_for_timeout(100)   # late console errors
    problems += events
    problems += [f'image did not load: {i["src"]}' for i in r['images'] if not i['ok']]
    problems += [p for p in (check_link(site, base, h) for h in set(r['links']) if h.startswith(base)) if p]
    if r['math'] and not r['mathjax']: problems.append('MathJax did not run')
    if r['mathTypeset'] < r['math']: problems.append(f"math not typeset: {r['math'] - r['mathTypeset']} of {r['math']}")
    if r['mathErrors']: problems.append(f"{r['mathErrors']} TeX errors")
    problems += [f'a `#|` line shows in a code cell: {c.splitlines()[0][:60]!r}' for c in r['codeInputs'] if re.search(r'^\s*#\|', c, re.M)]
    if name in order:   # a page of the book: reading order
        i = order.index(name)
        want_prev = base + f'{order[i-1]}.html' if i > 0 else None
        want_next = base + f'{order[i+1]}.html' if i + 1 < len(order) else None
        if r['prev'] != want_prev: problems.append(f"previous link {r['prev']} != {want_prev}")
        if r['next'] != want_next: problems.append(f"next link {r['next']} != {want_next}")
        if r['headings'] and not r['toc']: problems.append('no table of contents for a page with sections')
    if exp is not None:   # a notebook page: what its notebook says it shows
        if exp['math'] and not r['math']: problems.append('the notebook has math but the page has none')
        if exp['code'] and not r['highlighted']: problems.append('code is not highlighted')
        if r['articleImages'] < exp['figures']: problems.append(f"{r['articleImages']} figures shown, the notebook has {exp['figures']}")
        if exp['figures']:
            f = r.get('figure')
            if not f or not f['visible'] or not f['naturalWidth']: problems.append(f'first figure not visible: {f}')
        shown = {norm_code(c) for c in r['codeInputs']}
        problems += [f'a `#| hide` cell shows: {h.splitlines()[0][:60]!r}' for h in exp['hidden'] if norm_code(strip_directives(h)) in shown]
    if shots is not None and exp is not None:
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots/f"{name.replace('/', '_')}.png"))
        if r.get('figure'):
            page.locator('article.bd-article img').first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots/f"{name.replace('/', '_')}_figure.png"))
    page.close()
    fig = r.get('figure')
    summary = (f"{len(r['images'])} images, {len({h for h in r['links'] if h.startswith(base)})} internal links, "
               f"{r['mathTypeset']}/{r['math']} math typeset, toc {r['toc']}"
               + (f", first figure {fig['width']}x{fig['height']} (natural {fig['naturalWidth']}px)" if fig else '')
               + (f", {len(exp['hidden'])} hidden cells" if exp and exp['hidden'] else ''))
    return problems, summary

def launch(pw, user_data: str):
    return pw.chromium.launch_persistent_context(user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                                 viewport={'width': 1200, 'height': 800}, service_workers='block')

def run_checks(site: Path, pages: list, shots: Path | None, verbose: bool = True) -> dict:
    "Check `pages` of `site` in one browser; returns {page: [problems]}."
    from playwright.sync_api import sync_playwright
    nbs = {page_of(p): p for part in book_notebooks().values() for p in part}
    order = book_pages()
    srv, base = serve(site)
    results = {}
    try:
        with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix='chromium-profile-') as prof:
            ctx = launch(pw, prof)
            offsite = []
            def guard(route):   # the site must work offline: nothing may leave this machine
                if route.request.url.startswith((base, 'data:', 'blob:')): route.continue_()
                else: offsite.append(route.request.url); route.abort()
            ctx.route('**/*', guard)
            for name in pages:
                n0 = len(offsite)
                t = time.time()
                exp = expectations(nbs[name]) if name in nbs else None
                try: problems, summary = check_page(ctx, site, base, name, exp, order, shots)
                except Exception as e: problems, summary = [f'check crashed: {type(e).__name__}: {e}'], ''
                problems += [f'request leaving the machine (blocked): {u}' for u in offsite[n0:]]
                results[name] = problems
                if verbose:
                    print(f"{'ok  ' if not problems else 'FAIL'} {name}.html  {summary}  [{time.time()-t:.1f}s]")
                    for p in problems: print(f'       - {p}')
            ctx.close()
    finally:
        srv.shutdown()
    return results

# ---------------------------------------------------------------- self-test: the check must fail on a broken site
def _edit(path: Path, old: str, new: str, count: int = 1):
    s = path.read_text(encoding='utf-8')
    if old not in s: raise SystemExit(f'self-test: cannot break {path.name}: {old!r} not found (the site changed shape?)')
    path.write_text(s.replace(old, new, count), encoding='utf-8')

def self_test() -> bool:
    "Break a copy of the site in known ways and require the check to report each; also stage a notebook with hidden cells."
    import build_site
    # 1. staging: `#| hide` cells go, `#|` lines go, `#| export` code stays, `#| echo: false` keeps only the output
    nb = {'cells': [
        {'cell_type': 'code', 'id': 'a', 'metadata': {}, 'outputs': [], 'execution_count': None, 'source': '#| default_exp x'},
        {'cell_type': 'code', 'id': 'b', 'metadata': {}, 'outputs': [], 'execution_count': None, 'source': '#| export\ndef f(x): return x'},
        {'cell_type': 'code', 'id': 'c', 'metadata': {}, 'outputs': [], 'execution_count': None, 'source': '#|hide\nsecret_edge_case()'},
        {'cell_type': 'code', 'id': 'd', 'metadata': {}, 'outputs': [], 'execution_count': None, 'source': '#| include: false\nalso_hidden()'},
        {'cell_type': 'code', 'id': 'e', 'metadata': {}, 'execution_count': 1, 'source': '#| echo: false\nshown_output()',
         'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': 'out'}]}],
        'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp)/'t.ipynb', Path(tmp)/'staged.ipynb'
        src.write_text(json.dumps(nb))
        build_site.stage_notebook(src, dst, {})
        cells = json.loads(dst.read_text())['cells']
        srcs = [c['source'] for c in cells]
        staged_ok = (srcs == ['def f(x): return x', 'shown_output()'] and cells[1]['metadata'].get('tags') == ['remove-input'])
        print(f"{'ok  ' if staged_ok else 'FAIL'} staging drops `#| hide`/`#| include: false`/directive-only cells, strips `#|` lines: {srcs}")
        ok &= staged_ok
    # 2. the browser check on a broken copy of the site
    broken = ['index', '00_data', '01_nested_tensor', '02_backbone', '03_position_encoding']
    fig_page = [p for p in book_pages() if p not in broken and '<img' in (OUT/f'{p}.html').read_text(encoding='utf-8')][-1]
    breaks = {   # page: (how it is broken, texts the check must report)
        'index': ('its figure file deleted', ['image did not load', 'first figure not visible']),
        '00_data': ('the MathJax script path broken', ['math not typeset', 'HTTP 404']),
        '01_nested_tensor': ('a link to a missing page and one to a missing anchor', ['broken link', 'broken anchor']),
        '02_backbone': ('a script that logs a console error', ['console error: self-test']),
        '03_position_encoding': ('a `#|` line put back into a code cell', ['`#|` line shows']),
        fig_page: ('its first figure hidden by CSS', ['first figure not visible']),
    }
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)/'site'
        shutil.copytree(OUT, site)
        m = re.search(r'<img[^>]*src="(_images/[^"]+)"', (site/'index.html').read_text())
        if not m: raise SystemExit('self-test: index.html shows no figure to break (the site changed shape?)')
        fig = m.group(1)
        (site/fig).unlink()   # index's figure (the architecture; 05 shows it too, and is not checked here)
        _edit(site/f'{fig_page}.html', '</head>', '<style>article.bd-article img{visibility:hidden}</style></head>')
        _edit(site/'00_data.html', 'mathjax/tex-svg-full.js', 'mathjax/missing.js')
        _edit(site/'01_nested_tensor.html', '</article>', '<a href="no_such_page.html">x</a><a href="#no-such-anchor">y</a></article>')
        _edit(site/'02_backbone.html', '</body>', '<script>console.error("self-test")</script></body>')
        _edit(site/'03_position_encoding.html', '<div class="highlight-ipython3 notranslate"><div class="highlight"><pre>',
              '<div class="highlight-ipython3 notranslate"><div class="highlight"><pre>#| export\n')
        results = run_checks(site, list(breaks) + ['04_joiner'], None, verbose=False)
    for page, (how, want) in breaks.items():
        found = [next((p for p in results[page] if w in p), None) for w in want]
        caught = all(found)
        ok &= caught
        print(f"{'ok  ' if caught else 'FAIL'} {page}.html with {how}: {'caught' if caught else 'NOT caught'}: "
              + ' | '.join(f or f'no {w!r} among {results[page]}' for f, w in zip(found, want)))
    clean = not results['04_joiner']
    ok &= clean
    print(f"{'ok  ' if clean else 'FAIL'} 04_joiner.html left intact passes: {results['04_joiner'] or 'no problem'}")
    return ok

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--self-test', action='store_true', help='break a copy of the site and require the check to catch it')
    ap.add_argument('--no-shots', action='store_true', help='take no screenshots')
    args = ap.parse_args()
    if not (OUT/'index.html').exists(): raise SystemExit(f'{OUT} has no index.html: run python .ci/build_site.py first')
    if not Path(CHROMIUM).exists(): raise SystemExit(f'{CHROMIUM} is missing: apt-get install chromium')
    t0 = time.time()
    if args.self_test:
        ok = self_test()
        print(f"self-test: {'the check catches every break' if ok else 'FAILED'} in {time.time()-t0:.0f}s")
        sys.exit(0 if ok else 1)
    book = book_pages()
    others = sorted(p.relative_to(OUT).with_suffix('').as_posix() for p in OUT.glob('**/*.html')
                    if not p.relative_to(OUT).parts[0].startswith('_'))
    pages = book + [p for p in others if p not in book]
    if SHOTS.exists() and not args.no_shots: shutil.rmtree(SHOTS)
    results = run_checks(OUT, pages, None if args.no_shots else SHOTS)
    bad = [p for p, probs in results.items() if probs]
    if not args.no_shots: print(f'screenshots: {SHOTS.relative_to(ROOT)}/ ({len(list(SHOTS.glob("*.png")))} files)')
    print(f'site pages: {len(results) - len(bad)} passed, {len(bad)} failed in {time.time()-t0:.0f}s')
    sys.exit(1 if bad else 0)

if __name__ == '__main__': main()
