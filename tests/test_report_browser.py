"""The report in a real browser: headless Chromium opens a small report from file:// with the network blocked.
No console errors; every figure renders (its screenshot is not blank); legend toggles and step sliders change
their figures; the contents list, the count-card filters, a section opened alone, the projector view and the
"open in the playground" links work (the last also through the playground's own server). Skips, saying why,
where Chromium or Playwright is missing."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from descend.__main__ import main
from descend.lab.report import rebuild
from descend.playground.links import ADDRESS, setup_from_url

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).exists():
    pytest.skip("no Chromium at /usr/bin/chromium (Debian: apt-get install chromium)", allow_module_level=True)

EXPERIMENTS = ["landscapes", "convex-hull", "condition-number"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "report"
    # landscapes and convex-hull: trajectory figures with step sliders and playground links; condition-number:
    # curves with a legend
    assert main(["lab", "--only", ",".join(EXPERIMENTS), "--seeds", "2", "--workers", "1", "--no-progress",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def richer_report(report, tmp_path_factory) -> Path:
    """The same report, rebuilt from a results.json with the fields the lab is growing (kind, interval, reason,
    tuning, "inconclusive (grid edge)")."""
    folder = tmp_path_factory.mktemp("richer")
    for path in report.iterdir():
        shutil.copyfile(path, folder / path.name)
    results = json.loads((report / "results.json").read_text())
    claims = results["claims"]
    for cid, entry in claims.items():
        entry["kind"] = "worked check" if entry["experiment"] == "condition-number" else "experiment"
        entry["interval"] = entry.pop("ci")
        entry["interval_method"] = "Wilson, 95%" if cid == "sgd-stays-inside-convex-hull" else "Student t, 95%"
    claims["momentum-beats-sgd-on-ill-conditioned-quadratic"].update(
        verdict="inconclusive (grid edge)", reason="SGD's best learning rate, 0.3, is the top of its grid",
        tuning={"SGD": {"grid": {"lr": [0.03, 0.1, 0.3]}, "best": {"lr": 0.3}, "at_edge": True},
                "heavy ball": {"grid": {"lr": [0.01, 0.03, 0.1], "momentum": [0.5, 0.9]},
                               "best": {"lr": 0.03, "momentum": 0.9}, "at_edge": False}})
    claims["adaptive-methods-escape-saddle-faster"].update(verdict="did not hold",
                                                           reason="RMSprop needs 3 steps, SGD at its best rate 2")
    results["counts"] = {"experiment": {"held": 3}, "worked check": {"held": 2}}  # a shape the page must not need
    (folder / "results.json").write_text(json.dumps(results))
    rebuild(folder)
    return folder


def launch(playwright):
    try:
        # swiftshader: WebGL for the playground's 3-D surface, where a test follows a link into it
        return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-angle=swiftshader",
                                                                          "--enable-unsafe-swiftshader"])
    except Exception as error:  # a Chromium that cannot start here (no display libraries, …)
        pytest.skip(f"Chromium at {CHROMIUM} does not start: {str(error).splitlines()[0]}")


class Browser:
    """One Chromium for the module: pages open offline (only file: URLs load) and collect console errors."""

    def __init__(self, browser):
        self.browser, self.errors, self.blocked = browser, [], []

    def open(self, url: str, width: int = 1280, height: int = 900, wait_for_plots: bool = True):
        context = self.browser.new_context(viewport={"width": width, "height": height})

        def offline(route):
            if route.request.url.startswith("file:"):
                route.continue_()
            else:  # the report must not need the network
                self.blocked.append(route.request.url)
                route.abort()

        context.route("**/*", offline)
        page = context.new_page()
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(url)
        if wait_for_plots:
            page.wait_for_function("[...document.querySelectorAll('.plot')].every(e => e.dataset.ready === '1')",
                                   timeout=60_000)
        return page


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = launch(playwright)
        yield Browser(chromium)
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, report):
    page = browser.open((report / "index.html").as_uri())
    yield page
    page.context.close()


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    return len(image.resize((200, 200)).getcolors(maxcolors=40_000) or ())


def figure_count(folder: Path) -> int:
    results = json.loads((folder / "results.json").read_text())
    return sum(len(e["figures"]) for e in results["experiments"].values())


def test_the_page_loads_offline_without_console_errors(page, browser):
    assert browser.errors == [] and browser.blocked == []
    assert page.locator("script[src='plotly.min.js']").count() == 1  # bundled, not from a CDN
    assert page.locator(".count").count() == 4 and "held" in page.locator(".counts").inner_text()


def test_every_figure_renders(page, report):
    figures = page.locator("figure img, figure .plot")
    assert figures.count() == figure_count(report) >= 14  # landscapes' 10, the hull's 2, condition-number's 2
    for index in range(figures.count()):
        element = figures.nth(index)
        element.scroll_into_view_if_needed()
        if element.evaluate("e => e.tagName") == "IMG":
            page.wait_for_function("e => e.complete && e.naturalWidth > 100", arg=element.element_handle())
        assert distinct_colours(element.screenshot()) > 20, f"figure {index} looks blank"


def test_legend_entries_toggle_their_traces(page):
    # the figures with few entries (the hull, the condition numbers, the zigzag): every entry
    plots = [p for p in page.locator(".plot").all() if p.locator("g.legend rect.legendtoggle").count() <= 5]
    assert len(plots) >= 3
    for plot in plots:
        plot.scroll_into_view_if_needed()
        toggles = plot.locator("g.legend rect.legendtoggle")
        assert toggles.count() >= 2
        for entry in range(toggles.count()):
            before = plot.screenshot()
            toggles.nth(entry).click()
            page.wait_for_timeout(700)  # past plotly's double-click window
            assert plot.screenshot() != before, f"legend entry {entry} changed nothing"
            assert plot.evaluate("e => e.data.some(t => t.visible === 'legendonly')")
            toggles.nth(entry).click()  # and back
            page.wait_for_timeout(700)
            assert plot.evaluate("e => e.data.every(t => t.visible !== 'legendonly')")  # all shown again


def test_the_step_slider_moves_the_trajectories(page):
    plots = page.locator(".plot")
    with_slider = [plots.nth(i) for i in range(plots.count()) if plots.nth(i).locator("g.slider-container").count()]
    assert len(with_slider) == 6  # the zigzag, four landscapes, the hull
    for plot in with_slider[:2] + with_slider[-1:]:
        plot.scroll_into_view_if_needed()
        box = plot.locator("g.slider-container rect.slider-rail-touch-rect").bounding_box()
        drawn = "e => JSON.stringify(e.data.map(t => [t.x, t.y]))"  # what the traces hold
        before, points = plot.screenshot(), plot.evaluate(drawn)
        page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)  # the rail's left end: step 0
        page.wait_for_timeout(500)
        assert "step 0" in plot.inner_text()
        assert plot.evaluate(drawn) != points, "moving the slider to step 0 left the paths as they were"
        assert plot.screenshot() != before


def test_trajectory_figures_have_equal_axes_and_readable_exponents(page):
    for plot in page.locator(".plot").all():
        has_contour = plot.evaluate("e => e.data.some(t => t.type === 'contour')")
        axes = plot.evaluate("""e => ['xaxis', 'yaxis'].map(a => {
            const axis = e._fullLayout[a]; return [axis._length, axis.range[0], axis.range[1], axis.exponentformat];
        })""")
        (x_pixels, x0, x1, x_format), (y_pixels, y0, y1, y_format) = axes
        if has_contour:  # one unit is as long on both axes: a circle stays a circle
            assert x_pixels / (x1 - x0) == pytest.approx(y_pixels / (y1 - y0), rel=0.02)
        assert "B" not in (x_format, y_format) and "SI" not in (x_format, y_format)  # never 1μ, 1n, 1p


def test_the_contents_list_links_every_section(page, report):
    results = json.loads((report / "results.json").read_text())
    links = page.locator("nav.contents a")
    assert [a.get_attribute("href") for a in links.all()] == ["#claims"] + [f"#{n}" for n in results["experiments"]]
    for name, experiment in results["experiments"].items():
        link = page.locator(f"nav.contents a[href='#{name}']")
        assert link.inner_text() == experiment["title"]
        link.click()
        page.wait_for_timeout(200)
        top = page.locator(f"section#{name}").bounding_box()["y"]
        assert 0 <= top < 120, f"{name}: the link left the section at y = {top}"


def visible_rows(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#claims-table tbody tr')].filter(r => !r.hidden)"
                         ".map(r => r.dataset.verdict)")


def test_the_count_cards_filter_the_claims_table(browser, richer_report):
    page = browser.open((richer_report / "index.html").as_uri())
    results = json.loads((richer_report / "results.json").read_text())
    verdicts = [c["verdict"] for c in results["claims"].values()]
    assert len(visible_rows(page)) == len(verdicts)
    cards = {card.get_attribute("data-verdict"): card for card in page.locator(".count[data-verdict]").all()}
    assert set(cards) == {"", "held", "did not hold", "inconclusive", "inconclusive (grid edge)"}
    for verdict, card in cards.items():
        if not verdict:
            continue
        card.click()
        shown = visible_rows(page)
        assert shown == [v for v in verdicts if v == verdict], verdict
        assert int(card.locator("b").inner_text()) == len(shown)
        assert card.get_attribute("aria-pressed") == "true"
        assert f"Showing {len(shown)} of {len(verdicts)} claims" in page.locator("#filter-state").inner_text()
        card.click()  # again: everything
        assert len(visible_rows(page)) == len(verdicts)
    # by keyboard, and the kind chips
    cards["did not hold"].focus()
    page.keyboard.press("Enter")
    assert visible_rows(page) == ["did not hold"]
    cards[""].click()
    page.locator(".kind-filter[data-kind='worked check']").click()
    kinds = page.evaluate("[...document.querySelectorAll('#claims-table tbody tr')].filter(r => !r.hidden)"
                          ".map(r => r.dataset.kind)")
    assert kinds == ["worked check", "worked check"]
    page.locator("#filter-state a.clear-filter").click()
    assert len(visible_rows(page)) == len(verdicts)
    assert browser.errors == []
    page.context.close()


def test_every_claim_row_gives_its_reason(browser, page, richer_report):
    reasons = page.locator("#claims-table td.reason").all_inner_texts()
    assert reasons and all(len(r) > 10 for r in reasons)  # read from the numbers where results.json gives none
    richer = browser.open((richer_report / "index.html").as_uri())
    row = richer.locator("#row-momentum-beats-sgd-on-ill-conditioned-quadratic")
    assert row.locator("td.reason").inner_text() == "SGD's best learning rate, 0.3, is the top of its grid"
    assert "worked check" in richer.locator("#row-gd-steps-grow-linearly-with-condition-number").inner_text()
    block = richer.locator("#claim-momentum-beats-sgd-on-ill-conditioned-quadratic")
    assert "⚠ at grid edge" in block.locator("table.tuning").inner_text()
    assert "lr ∈ {0.01, 0.03, 0.1}; momentum ∈ {0.5, 0.9}" in block.locator("table.tuning").inner_text()
    assert "Wilson, 95%" in richer.locator("#claim-sgd-stays-inside-convex-hull").inner_text()
    richer.context.close()


def test_a_section_opens_alone(browser, report):
    page = browser.open((report / "index.html").as_uri() + "?section=convex-hull#convex-hull")
    shown = page.evaluate("[...document.querySelectorAll('section.experiment')].filter(s => s.offsetParent)"
                          ".map(s => s.id)")
    assert shown == ["convex-hull"]
    assert not page.locator("#claims-table").is_visible() and not page.locator("nav.contents").is_visible()
    back = page.locator("#convex-hull .alone-note a")
    assert back.is_visible() and back.get_attribute("href") == "index.html#convex-hull"
    # each section links to itself alone
    assert page.locator("#landscapes a.open-alone").get_attribute("href") == "?section=landscapes#landscapes"
    page.context.close()


def test_the_projector_view(browser, report):
    page = browser.open((report / "index.html").as_uri() + "#landscapes", width=1280, height=720)
    page.locator("#projector").click()
    page.wait_for_function("document.body.classList.contains('projector')")
    page.wait_for_function("[...document.querySelectorAll('.plot')].every(e => e.dataset.ready === '1')")
    assert "view=projector" in page.url
    assert float(page.evaluate("getComputedStyle(document.body).fontSize").rstrip("px")) >= 22
    plot = page.locator("#landscapes .plot").first
    assert plot.evaluate("e => e._fullLayout.font.size") >= 20  # the figures' type grows too
    # the arrow keys step through the slides (a section's head, each claim, each figure), one per screen
    page.evaluate("document.querySelector('#landscapes .section-head').scrollIntoView({block: 'start'})")
    figures_seen = 0
    for _ in range(page.locator("#landscapes .slide").count() - 1):
        page.keyboard.press("ArrowRight")
        page.wait_for_timeout(100)
        screen = page.evaluate("""() => {
            const visible = (e) => { const b = e.getBoundingClientRect(); return b.bottom > 1 && b.top < innerHeight - 1; };
            const top = [...document.querySelectorAll('.slide')].find(e => Math.abs(e.getBoundingClientRect().top) < 3);
            const figure = top && top.tagName === 'FIGURE' ? top : null;
            const content = figure && [...figure.children].map(c => c.getBoundingClientRect().bottom);
            return {figure: Boolean(figure), shown: [...document.querySelectorAll('figure')].filter(visible).length,
                    bottom: content ? Math.max(...content) : 0, height: innerHeight};
        }""")
        if screen["figure"]:
            figures_seen += 1
            assert screen["shown"] == 1, f"more than one figure on the screen: {screen}"
            assert screen["bottom"] <= screen["height"] + 1, f"the figure runs past the screen: {screen}"
    assert figures_seen == page.locator("#landscapes figure").count()
    # contour lines stay, bolder; the axes stay equal
    contour = plot.evaluate("e => e.data.find(t => t.type === 'contour')")
    assert contour["contours"]["coloring"] == "lines" and contour["line"]["width"] >= 1.5
    page.keyboard.press("Escape")
    page.wait_for_function("!document.body.classList.contains('projector')")
    assert "view=projector" not in page.url
    # a projector link opens in the projector view
    again = browser.open((report / "index.html").as_uri() + "?view=projector#convex-hull", width=1280, height=720)
    assert again.evaluate("document.body.classList.contains('projector')")
    again.context.close()
    page.context.close()
    assert browser.errors == []


def test_playground_links_follow_the_address_given(page, report):
    links = page.locator("a.playground")
    assert links.count() == 12  # zigzag, four landscapes (each PNG and its interactive copy), the hull (both)
    for link in links.all():
        href = link.get_attribute("href")
        assert href.startswith(ADDRESS + "#setup=")
        setup = setup_from_url(href)
        assert setup["landscape"] in ("quadratic", "rosenbrock", "beale", "saddle", "convex-hull") and setup["runs"]
    field = page.locator("#playground-address")
    field.fill("http://127.0.0.1:9999/")
    field.dispatch_event("change")
    assert links.first.get_attribute("href").startswith("http://127.0.0.1:9999/#setup=")
    assert "descend playground --port 8765" in page.locator(".playground-help").inner_text()
    field.fill(ADDRESS)
    field.dispatch_event("change")


def test_served_by_the_playground_a_link_opens_the_same_setup(browser, report):
    from descend.playground.server import Running

    problems = []
    with Running(report=report) as url:
        context = browser.browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(url + "report/#landscapes")
        link = page.locator("#landscapes figure a.playground").first
        href = link.get_attribute("href")
        assert href.startswith(url + "#setup="), href  # the same server: no address to configure
        setup = setup_from_url(href)
        with page.context.expect_page() as opened:
            link.click()
        playground = opened.value
        playground.on("pageerror", lambda e: problems.append(str(e)))
        playground.wait_for_load_state("domcontentloaded")
        playground.wait_for_function("document.body.dataset.status === 'ready'", timeout=90_000)
        state = playground.evaluate("window.playground.state")
        assert state["landscape"] == setup["landscape"] and state["start"] == setup["start"]
        assert [r["optimizer"] for r in state["runs"]] == [r["optimizer"] for r in setup["runs"]]
        for run, asked in zip(state["runs"], setup["runs"]):
            assert {k: run["hyperparameters"][k] for k in asked["hyperparameters"]} == asked["hyperparameters"]
        assert playground.evaluate("window.playground.result.runs.length") == len(setup["runs"])
        context.close()
    assert problems == []
