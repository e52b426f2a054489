"""The built site: executed pages without errors, working links, and a real browser's view.

Needs the site in _build/html (`make test` builds it first). The browser tests block every
request that does not go to the local server, so they also prove the site works offline.
"""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from tools import twins

ROOT = Path(__file__).resolve().parents[1]


def toc_pages() -> list[str]:
    """Every page of _toc.yml, as its source path without suffix (e.g. 'book/00_intro')."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]
    for part in toc.get("parts", []):
        for chapter in part.get("chapters", []):
            pages.append(chapter["file"])
            pages += [s["file"] for s in chapter.get("sections", [])]
    return pages


PAGES = toc_pages()
NOTEBOOK_PAGES = [p for p in PAGES if twins.is_notebook(next((ROOT).glob(p + ".*")))]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images, self.ids, self.classes = [], [], set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if a.get("class"):
            self.classes.append(a["class"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img" and "src" in a:
            self.images.append(a["src"])


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> _Page:
    """The parsed page, once per path: the site does not change while the tests run."""
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.mark.parametrize("page", PAGES)
def test_page_was_built(site, page):
    assert (site / f"{page}.html").exists(), f"{page} is in _toc.yml but was not built"


def executed_notebook(site: Path, page: str):
    """The notebook as the build executed it, from the build's execution cache."""
    from jupyter_cache import get_cache

    cache = get_cache(site.parent / ".jupyter_cache")
    uri = str(next(ROOT.glob(page + ".*")))
    record = cache.get_cached_project_nb(uri)
    assert record is not None, f"{page} was not executed during the build"
    return cache.get_cache_bundle(record.pk).nb


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_executed_notebook_has_no_errors_or_stderr(site, page):
    nb = executed_notebook(site, page)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{page} has no code cells"
    assert all(c.get("execution_count") for c in code), f"{page}: some cells did not run"
    for c in code:
        for out in c.get("outputs", []):
            assert out["output_type"] != "error", f"{page}: error output {out.get('ename')}: {out.get('evalue')}"
            assert out.get("name") != "stderr", f"{page}: stderr output: {''.join(out['text'])[:300]}"


@pytest.mark.parametrize("page", PAGES)
def test_html_has_no_error_output_and_no_stray_progress_bars(site, page):
    text = (site / f"{page}.html").read_text()
    parsed = parse(site / f"{page}.html")
    bad = [c for c in parsed.classes if re.search(r"\b(output\s+)?(traceback|stderr)\b", c)]
    assert not bad, f"{page}: error or stderr output in the page: {bad[:3]}"
    assert "Traceback (most recent call last)" not in text
    assert not re.search(r"\d+%\|[█▏▎▍▌▋▊▉ ]*\|", text), f"{page}: a progress bar was rendered"


@pytest.mark.parametrize("page", PAGES)
def test_internal_links_and_images_resolve(site, page):
    path = site / f"{page}.html"
    parsed = parse(path)
    for href in parsed.links:
        url = urlsplit(href)
        if url.scheme or href.startswith(("mailto:", "javascript:")):
            continue
        target = path if not url.path else (path.parent / unquote(url.path)).resolve()
        assert target.exists(), f"{page}: broken link {href}"
        if url.fragment and target.suffix == ".html":
            assert url.fragment in parse(target).ids, f"{page}: link {href} points at a missing anchor"
    for src in parsed.images:
        if src.startswith("data:image/"):
            continue
        assert not urlsplit(src).scheme, f"{page}: image from the network: {src}"
        assert (path.parent / unquote(urlsplit(src).path)).resolve().exists(), f"{page}: missing image {src}"


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_colab_button_opens_the_twin_notebook(site, page):
    url, branch = twins.repository()
    org_repo = url.split("github.com/")[-1]
    twin = twins.twin_path(page + ".md").as_posix()
    expected = f"https://colab.research.google.com/github/{org_repo}/blob/{branch}/{twin}"
    links = parse(site / f"{page}.html").links
    colab = [h for h in links if h.startswith("https://colab.research.google.com/")]
    assert colab == [expected], f"{page}: Colab link(s) {colab}, expected {expected}"
    assert (ROOT / twin).exists(), f"the twin {twin} the button opens is missing"


def test_non_book_files_are_not_pages(site):
    for name in ["README.html", "notebooks", "tests", ".venv", "benchmarks", "dgm", "tools"]:
        assert not (site / name).exists(), f"{name} was built into the site"


# ----------------------------------------------------------------------------- in a browser
def open_page(browser, site_url, page):
    """Load a page with every non-local request blocked; return (page, errors, blocked URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors, blocked = [], []
    tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    tab.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)

    def route(r):
        if r.request.url.startswith(site_url) or r.request.url.startswith("data:"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.goto(f"{site_url}/{page}.html", wait_until="load")
    return tab, errors, blocked


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_offline_without_javascript_errors(browser, site_url, page):
    tab, errors, blocked = open_page(browser, site_url, page)
    tab.wait_for_timeout(500)
    assert not errors, f"{page}: {errors}"
    assert not blocked, f"{page} asked the network for {blocked}"
    tab.context.close()


@pytest.mark.parametrize("page", PAGES)
def test_images_load_and_math_renders(browser, site_url, page):
    tab, errors, _ = open_page(browser, site_url, page)
    broken = tab.eval_on_selector_all(
        "img", "ims => ims.filter(im => im.offsetParent !== null && !(im.complete && im.naturalWidth > 0)).map(im => im.src.slice(0, 80))"
    )
    assert not broken, f"{page}: images that did not load: {broken}"
    if parse(ROOT / "_build" / "html" / f"{page}.html").classes.count("math notranslate nohighlight"):
        untypeset = "() => [...document.querySelectorAll('.math')].filter(e => !e.querySelector('mjx-container')).length"
        try:
            tab.wait_for_function(f"({untypeset})() === 0", timeout=20_000)
        except Exception:
            pass  # reported below with the count
        raw = tab.evaluate(untypeset)
        assert raw == 0, f"{page}: {raw} math elements were not typeset by MathJax"
    tab.context.close()


# Pages whose code draws a slider (dgm.slider.slider): on the site each must move without a kernel.
SLIDER_PAGES = [p for p in NOTEBOOK_PAGES if "slider(" in next(ROOT.glob(p + ".*")).read_text()]


def test_chapters_with_sliders_are_found():
    assert {"book/00_intro", "book/01_flows", "book/02_vi", "book/04_gans", "book/05_diffusion"} <= set(SLIDER_PAGES)


@pytest.mark.parametrize("page", SLIDER_PAGES)
def test_slider_changes_the_picture(browser, site_url, page):
    tab, errors, _ = open_page(browser, site_url, page)
    assert tab.locator(".dgm-slider").count() >= 1, f"{page} draws a slider but the page shows none"
    slider = tab.locator(".dgm-slider").first
    slider.scroll_into_view_if_needed()
    visible = lambda: slider.locator("img.dgm-slider-frame:visible")  # noqa: E731
    assert visible().count() == 1
    before_src, before_label = visible().get_attribute("src"), slider.locator(".dgm-slider-value").inner_text()
    before_shot = slider.screenshot()
    rng = slider.locator("input[type=range]")
    rng.focus()
    at_end = rng.input_value() == rng.get_attribute("max")  # a slider may start at its last frame
    tab.keyboard.press("ArrowLeft" if at_end else "ArrowRight")  # a real key press, as a reader would
    assert visible().count() == 1
    assert visible().get_attribute("src") != before_src, "moving the slider did not change the frame"
    after_label = slider.locator(".dgm-slider-value").inner_text()
    assert after_label != before_label
    assert after_label == visible().get_attribute("data-label")
    assert slider.screenshot() != before_shot, "the picture on screen did not change"
    assert not errors, errors
    tab.context.close()


@pytest.mark.parametrize("page", NOTEBOOK_PAGES)
def test_code_cells_fit_the_column_at_1280_px(browser, site_url, page):
    """The 88-character lines of tests/test_pages.py show whole, next to both sidebars."""
    tab, _, _ = open_page(browser, site_url, page)
    cut = tab.eval_on_selector_all(
        "div.cell_input pre",
        "pres => pres.filter(p => p.scrollWidth > p.clientWidth + 1)"
        ".map(p => p.textContent.split('\\n').reduce((a, b) => b.length > a.length ? b : a))",
    )
    assert not cut, f"{page}: code cells that scroll sideways at 1280 px, longest lines: {cut}"
    probe = tab.evaluate(
        "() => { const pre = document.querySelector('div.cell_input pre');"
        " if (!pre) return null; const s = document.createElement('span');"
        " s.textContent = 'x'.repeat(88); pre.appendChild(s);"
        " const w = s.getBoundingClientRect().width; s.remove();"
        " const cs = getComputedStyle(pre);"
        " return [w, pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight)]; }"
    )
    if probe is not None:
        assert probe[0] <= probe[1], f"{page}: 88 characters need {probe[0]:.0f} px, the column has {probe[1]:.0f}"
    tab.context.close()
