"""The report in a real browser: headless Chromium opens a small report from file:// with the network blocked.
No console errors, every figure renders (its screenshot is not blank), every legend toggle and step slider
changes its figure. Skips, saying why, where Chromium or Playwright is missing."""
from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from descend.__main__ import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium at /usr/bin/chromium (Debian: apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    # convex-hull: a trajectory figure with a step slider; condition-number: curves with a legend
    assert main(["lab", "--only", "convex-hull,condition-number", "--seeds", "2", "--workers", "1", "--no-progress",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def page(report):
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        except Exception as error:  # a Chromium that cannot start here (no display libraries, …)
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(error).splitlines()[0]}")
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        blocked = []

        def offline(route):
            if route.request.url.startswith("file:"):
                route.continue_()
            else:  # the report must not need the network
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((report / "index.html").as_uri())
        page.wait_for_function("[...document.querySelectorAll('.plot')].every(e => e.dataset.ready === '1')",
                               timeout=30_000)
        page.errors, page.blocked = errors, blocked
        yield page
        browser.close()


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.resize((200, 200)).getcolors(maxcolors=40_000) or ())


def test_the_page_loads_offline_without_console_errors(page):
    assert page.errors == [] and page.blocked == []
    assert page.locator("script[src='plotly.min.js']").count() == 1  # bundled, not from a CDN
    assert page.locator(".count").count() == 3 and "held" in page.locator(".counts").inner_text()


def test_every_figure_renders(page):
    figures = page.locator("figure img, figure .plot")
    assert figures.count() == 4  # two PNGs and two interactive figures
    for index in range(figures.count()):
        element = figures.nth(index)
        element.scroll_into_view_if_needed()
        if element.evaluate("e => e.tagName") == "IMG":
            assert element.evaluate("e => e.complete && e.naturalWidth > 100")
        assert distinct_colours(element.screenshot()) > 20, f"figure {index} looks blank"


def test_every_legend_entry_toggles_its_trace(page):
    plots = page.locator(".plot")
    for index in range(plots.count()):
        plot = plots.nth(index)
        plot.scroll_into_view_if_needed()
        toggles = plot.locator("g.legend rect.legendtoggle")
        assert toggles.count() >= 2
        for entry in range(toggles.count()):
            before = plot.screenshot()
            toggles.nth(entry).click()
            page.wait_for_timeout(700)  # past plotly's double-click window
            assert plot.screenshot() != before, f"legend entry {entry} of plot {index} changed nothing"
            assert plot.evaluate("e => e.data.some(t => t.visible === 'legendonly')")
            toggles.nth(entry).click()  # and back
            page.wait_for_timeout(700)
            assert plot.evaluate("e => e.data.every(t => t.visible !== 'legendonly')")  # all shown again


def test_the_step_slider_moves_the_trajectories(page):
    plots = page.locator(".plot")
    with_slider = [plots.nth(i) for i in range(plots.count()) if plots.nth(i).locator("g.slider-container").count()]
    assert with_slider
    for plot in with_slider:
        plot.scroll_into_view_if_needed()
        box = plot.locator("g.slider-container rect.slider-rail-touch-rect").bounding_box()
        drawn = "e => JSON.stringify(e.data.map(t => [t.x, t.y]))"  # what the traces hold
        before, points = plot.screenshot(), plot.evaluate(drawn)
        page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)  # the rail's left end: step 0
        page.wait_for_timeout(500)
        assert "step 0" in plot.inner_text()
        assert plot.evaluate(drawn) != points, "moving the slider to step 0 left the paths as they were"
        assert plot.screenshot() != before
