"""The lab's HTML report: a summary of verdicts, then one section per experiment with its claims (source,
statement, criterion, effect ± 95% CI, verdict) and its figures, interactive ones drawn by a bundled plotly.js."""
from __future__ import annotations

import html
import json
import math
import shutil
from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"

STYLE = """
:root { --held: #1b7f3b; --failed: #b3261e; --open: #8a6d00; --ink: #1d1d1f; --muted: #6b6b70; --line: #e3e3e8; }
* { box-sizing: border-box; }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0;
       background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5em 1.2em 4em; }
header h1 { margin: 0; font-size: 1.9em; letter-spacing: -0.01em; }
header p { margin: 0.3em 0; color: var(--muted); }
.counts { display: flex; gap: 0.8em; margin: 1.2em 0; flex-wrap: wrap; }
.count { flex: 1 1 10em; background: white; border: 1px solid var(--line); border-radius: 10px; padding: 0.7em 1em; }
.count b { display: block; font-size: 2em; line-height: 1.1; }
.count.held b { color: var(--held); } .count.failed b { color: var(--failed); } .count.open b { color: var(--open); }
table.claims { width: 100%; border-collapse: collapse; background: white; border: 1px solid var(--line);
               border-radius: 10px; overflow: hidden; font-size: 14px; }
table.claims th, table.claims td { padding: 0.45em 0.7em; text-align: left; border-bottom: 1px solid var(--line);
                                   vertical-align: top; }
table.claims th { background: #f3f3f6; font-weight: 600; }
table.claims td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
.badge { display: inline-block; padding: 0.05em 0.6em; border-radius: 999px; color: white; font-size: 0.85em;
         font-weight: 600; white-space: nowrap; }
.badge.held { background: var(--held); } .badge.failed { background: var(--failed); }
.badge.open { background: var(--open); }
.tag { display: inline-block; padding: 0 0.5em; border: 1px solid var(--line); border-radius: 999px;
       font-size: 0.8em; color: var(--muted); margin-left: 0.4em; }
section.experiment { background: white; border: 1px solid var(--line); border-radius: 12px; padding: 1em 1.3em;
                     margin: 1.6em 0; }
section.experiment h2 { margin: 0.1em 0 0.4em; font-size: 1.35em; }
.claim { border-left: 4px solid var(--line); padding: 0.3em 0.9em; margin: 0.8em 0; }
.claim.held { border-color: var(--held); } .claim.failed { border-color: var(--failed); }
.claim.open { border-color: var(--open); }
.claim .statement { font-style: italic; }
.claim dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 0.9em; margin: 0.4em 0; font-size: 14px; }
.claim dt { color: var(--muted); } .claim dd { margin: 0; }
.summary { color: #333; }
figure { margin: 1em 0; } figcaption { color: var(--muted); font-size: 14px; margin-top: 0.2em; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; background: white; }
.plot { width: 100%; min-height: 420px; }
details pre { background: #f5f5f7; padding: 0.8em; overflow-x: auto; font-size: 12px; max-height: 30em; }
a { color: #0b57d0; }
"""

CLASS = {"held": "held", "did not hold": "failed", "inconclusive": "open", "inconclusive (grid edge)": "open"}

DRAW = """
(function () {
  var figures = document.querySelectorAll('.plot[data-spec]');
  figures.forEach(function (element) {
    var spec = JSON.parse(document.getElementById(element.getAttribute('data-spec')).textContent);
    var layout = Object.assign({autosize: true, paper_bgcolor: 'white', plot_bgcolor: 'white',
                                font: {family: 'system-ui, sans-serif', size: 12}}, spec.layout || {});
    Plotly.newPlot(element, spec.data || [], layout, {responsive: true, displaylogo: false})
      .then(function () { element.setAttribute('data-ready', '1'); });
  });
})();
"""


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—" if value is None else str(value)
    if value == 0:
        return "0"
    magnitude = abs(value)
    return f"{value:.3g}" if 1e-3 <= magnitude < 1e4 else f"{value:.2e}"


def effect_text(claim: dict[str, Any]) -> str:
    """'1.52 [1.31, 1.73]' (mean and 95% interval), or the single value of a deterministic claim."""
    if claim["deterministic"] or claim["ci"] is None:
        return _number(claim["mean"])
    low, high = claim["ci"]
    return f"{_number(claim['mean'])} [{_number(low)}, {_number(high)}]"


def _badge(verdict: str) -> str:
    return f'<span class="badge {CLASS[verdict]}">{html.escape(verdict)}</span>'


def _claim_block(claim_id: str, claim: dict[str, Any]) -> str:
    e = html.escape
    per_seed = ", ".join(_number(v) for v in claim["effects"])
    kind = ('<span class="tag">deterministic: one run</span>' if claim["deterministic"]
            else f'<span class="tag">{claim["n"]} seeds</span>')
    note = f'<dt>note</dt><dd>{e(claim["note"])}</dd>' if claim.get("note") and not claim["deterministic"] else ""
    return (f'<div class="claim {CLASS[claim["verdict"]]}" id="claim-{e(claim_id)}">'
            f'<div>{_badge(claim["verdict"])} <code>{e(claim_id)}</code>{kind}</div>'
            f'<p class="statement">“{e(claim["statement"])}”</p><dl>'
            f'<dt>source</dt><dd>{e(claim["source"])}</dd>'
            f'<dt>measured</dt><dd>{e(claim["measurement"])}</dd>'
            f'<dt>criterion</dt><dd>{e(claim["criterion"])} (fixed before the run)</dd>'
            f'<dt>effect</dt><dd><b>{e(effect_text(claim))}</b>'
            f'{"" if claim["deterministic"] else " (mean [95% CI])"}; per seed: {e(per_seed)}</dd>{note}</dl></div>')


def _figure(figure: dict[str, str], folder: Path, index: int) -> str:
    e = html.escape
    caption = f'<figcaption>{e(figure["caption"])}</figcaption>' if figure["caption"] else ""
    if figure["kind"] == "interactive":
        spec = (folder / figure["file"]).read_text().replace("</", "<\\/")
        return (f'<figure><div class="plot" id="plot-{index}" data-spec="spec-{index}" '
                f'data-file="{e(figure["file"])}"></div>'
                f'<script type="application/json" id="spec-{index}">{spec}</script>{caption}</figure>')
    return f'<figure><img src="{e(figure["file"])}" alt="{e(figure["caption"] or figure["file"])}">{caption}</figure>'


def write_html(report: dict[str, Any], folder: Path) -> str:
    e = html.escape
    settings, counts, claims, meta = report["settings"], report["counts"], report["claims"], report["meta"]
    rows = "".join(
        f'<tr><td>{_badge(c["verdict"])}</td><td><a href="#claim-{e(cid)}">{e(c["statement"])}</a></td>'
        f'<td>{e(c["source"])}</td><td>{e(c["criterion"])}</td><td class="num">{e(effect_text(c))}</td>'
        f'<td class="num">{"1 (exact)" if c["deterministic"] else c["n"]}</td></tr>'
        for cid, c in claims.items())
    sections, index = [], 0
    for name, experiment in report["experiments"].items():
        blocks = "".join(_claim_block(cid, claims[cid]) for cid in experiment["claims"])
        figures = []
        for figure in experiment["figures"]:
            figures.append(_figure(figure, folder, index))
            index += 1
        numbers = e(json.dumps(experiment["numbers"], indent=1))
        seconds = meta.get("seconds", {}).get(name, [])
        sections.append(
            f'<section class="experiment" id="{e(name)}"><h2>{e(experiment["title"])}</h2>{blocks}'
            f'<p class="summary">{e(experiment["summary"])}'
            f'{" (first seed)" if len(experiment["seeds"]) > 1 else ""}</p>{"".join(figures)}'
            f'<details><summary>All measured numbers of the first seed '
            f'({sum(seconds):.1f} s over {len(seconds)} run{"s" if len(seconds) != 1 else ""})</summary>'
            f'<pre>{numbers}</pre></details></section>')
    plotly = f'<script src="{PLOTLY_JS}"></script><script>{DRAW}</script>' if index and (folder / PLOTLY_JS).exists() \
        else ""
    total = sum(counts.values())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>descend lab</title>
<style>{STYLE}</style></head><body><main>
<header><h1>descend lab</h1>
<p>{total} claims from the course material, each measured over seeds with a 95% confidence interval. A claim
<b>held</b> when its whole interval meets the criterion fixed before the run, <b>did not hold</b> when the whole
interval misses it, and is <b>inconclusive</b> when the interval straddles the threshold.</p>
<p>{e(settings["mode"])} run · base seed {settings["seed"]} · {e(settings["device"])} ·
{meta.get("total_seconds", "?")} s with {meta.get("workers", "?")} worker(s) on {e(meta["machine"])}
({meta.get("cpu_seconds_total", "?")} CPU-seconds in the runs) ·
torch {e(meta["torch"])} · {e(meta["date"])} · every number in <a href="results.json">results.json</a></p></header>
<div class="counts"><div class="count held"><b>{counts["held"]}</b>held</div>
<div class="count failed"><b>{counts["did not hold"]}</b>did not hold</div>
<div class="count open"><b>{counts["inconclusive"]}</b>inconclusive</div></div>
<table class="claims"><tr><th>verdict</th><th>claim</th><th>source</th><th>criterion</th>
<th>effect [95% CI]</th><th>seeds</th></tr>{rows}</table>
{"".join(sections)}
</main>{plotly}</body></html>
"""


def bundle_plotly(folder: Path) -> bool:
    """Copies plotly.js from the installed ``plotly`` package into the report, so it works offline."""
    try:
        import plotly
    except ImportError:
        return False
    source = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not source.exists():
        return False
    shutil.copyfile(source, folder / PLOTLY_JS)
    return True


def write_report(report: dict[str, Any], folder: Path) -> None:
    """Writes ``results.json``, ``index.html`` and (when any figure is interactive) plotly.js into ``folder``."""
    interactive = any(f["kind"] == "interactive" for e in report["experiments"].values() for f in e["figures"])
    if interactive and not bundle_plotly(folder):
        for experiment in report["experiments"].values():  # no plotly.js: the PNGs still tell the story
            experiment["figures"] = [f for f in experiment["figures"] if f["kind"] != "interactive"]
    from .core import jsonable

    (folder / "results.json").write_text(json.dumps(jsonable(report), indent=1, allow_nan=False))
    (folder / "index.html").write_text(write_html(report, folder))
