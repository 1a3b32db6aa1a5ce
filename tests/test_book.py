"""The website: it builds from the stored chapters with warnings as errors, and a real browser
(headless Chromium, 1280 px wide) loads every page with no broken internal link, no missing
image, no code or display equation wider than its column, no MathJax error and no citation
label that names two papers."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "_build" / "screenshots"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_every_toc_entry_exists_and_every_chapter_is_in_the_toc():
    files = _toc_files()
    for f in files:
        assert (ROOT / f"{f}.md").exists() or (ROOT / f"{f}.ipynb").exists(), f"{f} is in _toc.yml but missing"
    for nb in (ROOT / "book").glob("*.ipynb"):
        assert f"book/{nb.stem}" in files, f"{nb.name} is not in _toc.yml, so it would not be built"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the book once (warnings are errors) into a temporary folder; yield its html root."""
    jb = Path(sys.executable).with_name("jupyter-book")
    jb = str(jb) if jb.exists() else shutil.which("jupyter-book")
    assert jb, "jupyter-book is not installed: pip install -e '.[book]'"
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [jb, "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, "jupyter-book build failed:\n" + proc.stdout[-4000:] + proc.stderr[-4000:]
    return out / "_build" / "html"


@pytest.mark.slow
def test_book_builds_without_warnings(site):
    for f in _toc_files():
        assert (site / f"{f}.html").exists(), f"{f}.html was not built"


def _chromium():
    """A headless Chromium driven by Selenium, or a skip (a failure under CI) when it is missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        msg = "Chromium is needed: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,1600"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def served(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.slow
def test_every_page_loads_in_a_browser_with_working_links_and_images(site, served):
    browser = _chromium()
    try:
        pages = [served + f"{f}.html" for f in _toc_files()]
        seen, broken = set(), []
        for url in pages:
            browser.get(url)
            assert browser.title, f"{url} has no title"
            # every <img> finished loading with real pixels
            bad_imgs = browser.execute_script(
                "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            assert not bad_imgs, f"{url}: images failed to load: {bad_imgs}"
            for href in browser.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                target, anchor = urldefrag(urljoin(url, href))
                if urlparse(target).netloc != urlparse(served).netloc or (target, anchor) in seen:
                    continue
                seen.add((target, anchor))
                path = site / urlparse(target).path.lstrip("/")
                if path.is_dir():
                    path = path / "index.html"
                if not path.exists():
                    broken.append(f"{url} -> {href}")
                elif anchor and path.suffix == ".html" and f'id="{anchor}"' not in path.read_text(errors="ignore"):
                    broken.append(f"{url} -> {href} (no such anchor)")
        assert not broken, "broken internal links:\n" + "\n".join(broken)
        # screenshots of the home page and a chapter, for people to look at
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, url in [("home", served + "book/intro.html"), ("chapter", pages[1])]:
            browser.get(url)
            assert browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
    finally:
        browser.quit()


# Runs in the page once MathJax has typeset it; returns what a reader at 1280 px would
# see wrong. Code: the pre blocks of cells and text; equations: MathJax's containers.
_LAYOUT_JS = r"""
const done = arguments[arguments.length - 1];
const mj = window.MathJax && MathJax.startup && MathJax.startup.promise;
(mj || Promise.resolve()).then(() => {
  const wide = (el) => el.scrollWidth > el.clientWidth + 1;
  const text = (el) => el.textContent.trim().replace(/\s+/g, " ").slice(0, 80);
  const out = {code: [], math: [], mathjax_errors: [], untypeset: [], cites: [],
               unlinked: []};
  for (const pre of document.querySelectorAll("article div.highlight pre")) {
    if (pre.clientWidth > 0 && wide(pre))
      out.code.push(`${pre.scrollWidth}px > ${pre.clientWidth}px: ${text(pre)}`);
  }
  for (const m of document.querySelectorAll("article div.math")) {
    const box = m.querySelector("mjx-container");
    if (!box) { out.untypeset.push(text(m)); continue; }
    const w = box.getBoundingClientRect().width;
    if (m.clientWidth > 0 && (wide(m) || w > m.clientWidth + 1))
      out.math.push(`${m.id || "(no label)"}: ${Math.round(w)}px > ${m.clientWidth}px`);
  }
  for (const e of document.querySelectorAll("mjx-merror"))
    out.mathjax_errors.push(e.getAttribute("data-mjx-error") || text(e));
  for (const a of document.querySelectorAll("span.bibtex-citation a"))
    out.cites.push([a.textContent.trim(), a.href]);
  for (const c of document.querySelectorAll("article code.xref.py"))
    if (!c.closest("a")) out.unlinked.push(text(c));
  done(out);
}).catch((e) => done({error: String(e)}));
"""


@pytest.mark.slow
def test_pages_fit_the_column_typeset_cleanly_and_cite_unambiguously(site, served):
    """At 1280 px: no code block or display equation scrolls sideways, MathJax reports
    no error and leaves no formula untypeset, every citation label names one paper, and
    every reference to the library's API resolves to its entry."""
    import re

    browser = _chromium()
    problems, labels = [], {}
    try:
        browser.set_script_timeout(60)
        for f in _toc_files():
            browser.get(served + f"{f}.html")
            out = browser.execute_async_script(_LAYOUT_JS)
            assert "error" not in out, f"{f}: MathJax did not start: {out['error']}"
            # the API page shows the docstrings as help() does: their literal blocks may be
            # wide; everything else a reader scrolls through must fit
            if f != "book/api":
                problems += [f"{f}: code wider than its column, {c}" for c in out["code"]]
            problems += [f"{f}: display equation wider than its column, {m}"
                         for m in out["math"]]
            problems += [f"{f}: MathJax error: {e}" for e in out["mathjax_errors"]]
            problems += [f"{f}: formula left untypeset: {u}" for u in out["untypeset"]]
            # references to Python's own names (ValueError, NamedTuple) have no entry offline
            problems += [f"{f}: API reference to nothing: {u}" for u in out["unlinked"]
                         if f != "book/api" or u.startswith("sdelab.")]
            for text, target in out["cites"]:
                labels.setdefault(text, set()).add(target)
    finally:
        browser.quit()
    assert labels, "no citation found on any page: the check itself is broken"
    problems += [f"citation label {t!r} links to {len(ids)} different entries"
                 for t, ids in labels.items() if len(ids) > 1]
    bib = (site / "book" / "bibliography.html").read_text()
    pattern = r'<span class="label"><span class="fn-bracket">\[</span>(.*?)<span'
    bib_labels = re.findall(pattern, bib)
    problems += [f"bibliography label {b!r} is used for two entries"
                 for b in sorted({b for b in bib_labels if bib_labels.count(b) > 1})]
    problems += [f"in-text citation {t!r} is not a bibliography label"
                 for t in sorted(set(labels) - set(bib_labels))]
    assert not problems, (f"{len(problems)} problems on the site:\n"
                          + "\n".join(problems))


def test_install_cells_use_the_one_repository_url():
    """The repository URL is one setting (_config.yml); every chapter's Colab install cell uses it."""
    import json

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    for nb in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        first_code = next("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert "import sdelab" in first_code and f"git+{url}" in first_code, (
            f"{nb.name}: the first code cell must be the guarded install cell using git+{url}"
        )
