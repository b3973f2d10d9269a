"""The lab's HTML report, a teaching tool: a contents list, count cards that filter the table of claims (each
with its verdict and a one-line reason), then one section per experiment (linkable, and openable alone) with its
claims (source, statement, criterion, effect and interval, tuning grids) and figures; a projector view shows one
figure per screen in large type. Interactive figures are drawn by a bundled plotly.js, so the page works offline.

The report is built from ``results.json`` alone (plus the figure files beside it), so it can be rebuilt::

    python -m descend.lab.report report/        # rewrites report/index.html from report/results.json
"""
from __future__ import annotations

import argparse
import html
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

PLOTLY_JS = "plotly.min.js"
MARKER = ".descend-report"  # the runner's list of the files it wrote (see runner.MARKER)

# verdict -> CSS class; an unknown verdict is shown in grey rather than refused
VERDICT_CLASS = {"held": "held", "did not hold": "failed", "inconclusive": "open", "inconclusive (grid edge)": "edge"}
VERDICT_ORDER = ("held", "did not hold", "inconclusive", "inconclusive (grid edge)")
VERDICT_MEANING = {
    "held": "its whole interval meets the criterion fixed before the run",
    "did not hold": "its whole interval misses the criterion",
    "inconclusive": "the interval straddles the threshold (more seeds may decide it)",
    "inconclusive (grid edge)": "a tuned optimizer's best setting lies at the edge of its grid, so the grid, not the "
                                "claim, decided the comparison",
}

STYLE = """
:root { --held: #1b7f3b; --failed: #b3261e; --open: #8a6d00; --edge: #a15c00; --other: #5f6368; --ink: #1d1d1f;
        --muted: #6b6b70; --line: #e3e3e8; --accent: #0b57d0; }
* { box-sizing: border-box; }
html { scroll-padding-top: 3.4em; }
body { font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); margin: 0;
       background: #fafafa; }
a { color: var(--accent); }
code { font-size: 0.92em; }
.bar { position: sticky; top: 0; z-index: 10; display: flex; gap: 0.6em; align-items: center; flex-wrap: wrap;
       padding: 0.45em 1.2em; background: rgba(250, 250, 250, 0.96); border-bottom: 1px solid var(--line); }
.bar .name { font-weight: 650; margin-right: auto; text-decoration: none; color: var(--ink); }
.bar button, .bar a.button { font: inherit; font-size: 0.9em; padding: 0.2em 0.8em; border: 1px solid #c5cbd5;
       border-radius: 6px; background: white; cursor: pointer; color: var(--ink); text-decoration: none; }
.bar button:hover { background: #eef1f5; }
.layout { display: grid; grid-template-columns: 16em minmax(0, 1fr); gap: 1.5em; max-width: 1480px; margin: 0 auto;
          padding: 1.2em 1.2em 4em; }
nav.contents { position: sticky; top: 3.6em; align-self: start; max-height: calc(100vh - 4.5em); overflow-y: auto;
               font-size: 13.5px; }
nav.contents h2 { font-size: 12px; text-transform: uppercase; letter-spacing: 0.06em; color: var(--muted);
                  margin: 0 0 0.4em; }
nav.contents ol { margin: 0; padding-left: 2em; }
nav.contents li { margin: 0.25em 0; }
nav.contents .marks { white-space: nowrap; }
.mark { display: inline-block; min-width: 1.5em; text-align: center; border-radius: 999px; color: white;
        font-size: 11px; font-weight: 600; padding: 0 0.35em; margin-left: 0.2em; }
.mark.held, .badge.held { background: var(--held); } .mark.failed, .badge.failed { background: var(--failed); }
.mark.open, .badge.open { background: var(--open); } .mark.edge, .badge.edge { background: var(--edge); }
.mark.other, .badge.other { background: var(--other); }
main { min-width: 0; }
header h1 { margin: 0; font-size: 1.9em; letter-spacing: -0.01em; }
header p { margin: 0.3em 0; color: var(--muted); }
header dl.verdicts { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 0.8em; margin: 0.5em 0;
                     color: var(--muted); font-size: 14px; }
header dl.verdicts dt { font-weight: 600; color: var(--ink); } header dl.verdicts dd { margin: 0; }
.counts { display: flex; gap: 0.8em; margin: 1.2em 0 0.5em; flex-wrap: wrap; }
.count { flex: 1 1 9em; background: white; border: 1px solid var(--line); border-radius: 10px; padding: 0.6em 1em;
         cursor: pointer; user-select: none; }
.count:hover { border-color: #b9bec8; }
.count[aria-pressed="true"] { outline: 3px solid var(--accent); outline-offset: -1px; }
.count b { display: block; font-size: 2em; line-height: 1.1; }
.count.held b { color: var(--held); } .count.failed b { color: var(--failed); } .count.open b { color: var(--open); }
.count.edge b { color: var(--edge); } .count.other b { color: var(--other); }
.kinds { display: flex; gap: 0.5em; flex-wrap: wrap; margin: 0 0 0.6em; font-size: 14px; align-items: center; }
.kind-filter { border: 1px solid var(--line); background: white; border-radius: 999px; padding: 0.1em 0.8em;
               cursor: pointer; }
.kind-filter[aria-pressed="true"] { border-color: var(--accent); color: var(--accent); font-weight: 600; }
.filter-state { color: var(--muted); font-size: 14px; margin: 0.2em 0 0.6em; min-height: 1.5em; }
table.claims { width: 100%; border-collapse: collapse; background: white; border: 1px solid var(--line);
               font-size: 14px; }
table.claims th, table.claims td { padding: 0.45em 0.6em; text-align: left; border-bottom: 1px solid var(--line);
                                   vertical-align: top; }
table.claims th { background: #f3f3f6; font-weight: 600; position: sticky; top: 2.6em; }
table.claims td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.claims .source { display: block; color: var(--muted); font-size: 12.5px; margin-top: 0.15em; }
table.claims td.reason { color: #333; }
table.claims col.verdict { width: 8.5em; } table.claims col.claim { width: 34%; } table.claims col.criterion { width: 17%; }
table.claims col.effect { width: 11em; } table.claims col.seeds { width: 4.5em; }
.derived { color: var(--muted); }
.badge { display: inline-block; padding: 0.05em 0.6em; border-radius: 999px; color: white; font-size: 0.85em;
         font-weight: 600; white-space: nowrap; }
.tag { display: inline-block; padding: 0 0.5em; border: 1px solid var(--line); border-radius: 999px;
       font-size: 0.8em; color: var(--muted); margin-left: 0.4em; white-space: nowrap; }
section.experiment { background: white; border: 1px solid var(--line); border-radius: 12px; padding: 1em 1.3em;
                     margin: 1.6em 0; }
.section-head h2 { margin: 0.1em 0 0.2em; font-size: 1.35em; }
.section-links { font-size: 13px; color: var(--muted); }
.section-links a { margin-right: 0.9em; }
.claim { border-left: 4px solid var(--line); padding: 0.3em 0.9em; margin: 0.8em 0; }
.claim.held { border-color: var(--held); } .claim.failed { border-color: var(--failed); }
.claim.open { border-color: var(--open); } .claim.edge { border-color: var(--edge); }
.claim.other { border-color: var(--other); }
.claim .statement { font-style: italic; }
.claim dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1em 0.9em; margin: 0.4em 0; font-size: 14px; }
.claim dt { color: var(--muted); } .claim dd { margin: 0; }
table.tuning { border-collapse: collapse; font-size: 13px; margin: 0.2em 0; }
table.tuning th, table.tuning td { border: 1px solid var(--line); padding: 0.15em 0.5em; text-align: left; }
table.tuning td.at-edge { color: var(--edge); font-weight: 600; }
.summary { color: #333; }
figure { margin: 1.2em 0; }
figcaption { color: var(--muted); font-size: 14px; margin-top: 0.2em; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 6px; background: white; }
.plot { width: 100%; min-height: 420px; }
.playground-link { font-size: 14px; margin: 0.3em 0 0; }
.playground-link a { font-weight: 600; }
.playground-link .note { color: var(--muted); }
.playground-help { background: #eef6ff; border: 1px solid #a9c8ee; border-radius: 8px; padding: 0.5em 0.9em;
                   font-size: 14px; margin: 0.8em 0; }
.playground-help input { font: inherit; font-size: 13px; width: 17em; }
details pre { background: #f5f5f7; padding: 0.8em; overflow-x: auto; font-size: 12px; max-height: 30em; }
.alone-note { display: none; }
body.alone .layout { grid-template-columns: minmax(0, 1fr); max-width: 1180px; }
body.alone nav.contents, body.alone header, body.alone #claims, body.alone .playground-help { display: none; }
body.alone section.experiment:not(.chosen) { display: none; }
body.alone .alone-note { display: block; color: var(--muted); margin: 0 0 0.5em; }
@media (max-width: 1000px) { .layout { grid-template-columns: minmax(0, 1fr); }
                             nav.contents { position: static; max-height: none; } }
/* projector: large type, one slide (a section's head, a claim, a figure) per screen */
body.projector { font-size: 24px; background: white; }
body.projector .layout { grid-template-columns: minmax(0, 1fr); max-width: none; padding: 0 2.5vw 2em; }
body.projector nav.contents, body.projector .playground-help, body.projector details { display: none; }
body.projector section.experiment { border: none; padding: 0; margin: 0; }
body.projector .bar { position: fixed; top: auto; bottom: 0.6em; right: 0.8em; padding: 0; background: none;
                      border: none; font-size: 16px; }
body.projector .bar a { display: none; }
body.projector .slide { min-height: 100vh; display: flex; flex-direction: column; justify-content: center;
                        margin: 0; padding: 0.5em 0; scroll-snap-align: start; scroll-margin-top: 0;
                        border-bottom: 1px dashed var(--line); }
body.projector figure.slide { height: 100vh; min-height: 0; }
body.projector figure img { flex: 1 1 0; min-height: 0; width: 100%; object-fit: contain; border: none; }
body.projector .plot { min-height: 0; }
body.projector figcaption, body.projector .playground-link { font-size: 20px; }
body.projector .claim dl, body.projector table.claims, body.projector table.tuning { font-size: 20px; }
body.projector table.claims th { top: 2.2em; }
body.projector .section-head h2 { font-size: 2em; }
body.projector .claim .statement { font-size: 1.2em; }
body.projector header h1 { font-size: 2.2em; }
html.snap { scroll-snap-type: y proximity; scroll-padding-top: 0; }
"""

SCRIPT = r"""
(function () {
  'use strict';
  var body = document.body, params = new URLSearchParams(location.search);
  var PROJECTOR_FONT = 20;

  // ---- figures: drawn from their specs, redrawn for the projector ------------------------------
  function layoutFor(spec, projector, element) {
    var layout = Object.assign({autosize: true, paper_bgcolor: 'white', plot_bgcolor: 'white',
                                font: {family: 'system-ui, sans-serif', size: 12}}, spec.layout || {});
    layout = JSON.parse(JSON.stringify(layout));
    var hasContour = (spec.data || []).some(function (t) { return t.type === 'contour'; });
    if (hasContour) {  // a landscape: one unit as long on both axes (a circle stays a circle)
      layout.yaxis = Object.assign({scaleanchor: 'x', scaleratio: 1, constrain: 'domain'}, layout.yaxis || {});
      layout.xaxis = Object.assign({constrain: 'domain'}, layout.xaxis || {});
    }
    if (projector) {
      layout.font = Object.assign({}, layout.font, {size: PROJECTOR_FONT});
      if (layout.title) layout.title = Object.assign({}, layout.title, {font: {size: PROJECTOR_FONT + 4}});
      // the figure, its caption and its link on one screen
      var others = [].slice.call(element.parentElement.children).filter(function (c) {
        return c !== element && c.tagName !== 'SCRIPT';
      }).reduce(function (sum, c) { return sum + c.getBoundingClientRect().height; }, 0);
      layout.height = Math.max(300, window.innerHeight - others - 30);
      layout.legend = Object.assign({}, layout.legend || {}, {font: {size: PROJECTOR_FONT - 2}});
      layout.margin = Object.assign({}, layout.margin || {}, {t: 60, b: 70});
      (layout.sliders || []).forEach(function (s) {
        s.font = {size: PROJECTOR_FONT - 6}; s.pad = {t: 75}; s.currentvalue = Object.assign({}, s.currentvalue, {font: {size: PROJECTOR_FONT - 4}});
      });
    }
    return layout;
  }
  function dataFor(spec, projector) {
    return (spec.data || []).map(function (trace) {
      if (!projector || trace.type !== 'contour') return trace;
      // contour lines a projector shows: darker and thicker
      return Object.assign({}, trace, {opacity: 0.95, line: Object.assign({}, trace.line || {}, {width: 1.6})});
    });
  }
  var plots = [].slice.call(document.querySelectorAll('.plot[data-spec]'));
  function draw(element) {
    var spec = element._spec || (element._spec = JSON.parse(
      document.getElementById(element.getAttribute('data-spec')).textContent));
    var projector = body.classList.contains('projector');
    element.setAttribute('data-ready', '0');
    return Plotly.react(element, dataFor(spec, projector), layoutFor(spec, projector, element),
                        {responsive: true, displaylogo: false})
      .then(function () { element.setAttribute('data-ready', '1'); });
  }
  function drawAll() { return Promise.all(plots.map(draw)); }
  if (window.Plotly) drawAll();

  // ---- the claims table: the count cards and kind chips filter it --------------------------------
  var rows = [].slice.call(document.querySelectorAll('#claims-table tbody tr'));
  var filter = {verdict: null, kind: null};
  function applyFilter() {
    var shown = 0;
    rows.forEach(function (row) {
      var keep = (!filter.verdict || row.getAttribute('data-verdict') === filter.verdict) &&
                 (!filter.kind || row.getAttribute('data-kind') === filter.kind);
      row.hidden = !keep;
      if (keep) shown += 1;
    });
    document.querySelectorAll('.count[data-verdict]').forEach(function (card) {
      var all = card.getAttribute('data-verdict') === '';
      card.setAttribute('aria-pressed', String(all ? !filter.verdict : card.getAttribute('data-verdict') === filter.verdict));
    });
    document.querySelectorAll('.kind-filter').forEach(function (chip) {
      chip.setAttribute('aria-pressed', String(chip.getAttribute('data-kind') === (filter.kind || '')));
    });
    var state = document.getElementById('filter-state');
    if (state) {
      var what = [filter.verdict && ('verdict “' + filter.verdict + '”'), filter.kind && ('kind “' + filter.kind + '”')]
        .filter(Boolean).join(', ');
      state.textContent = what ? 'Showing ' + shown + ' of ' + rows.length + ' claims (' + what + '). ' : '';
      if (what) {
        var clear = document.createElement('a');
        clear.href = '#claims'; clear.textContent = 'show all'; clear.className = 'clear-filter';
        clear.addEventListener('click', function (event) { event.preventDefault(); filter = {verdict: null, kind: null}; applyFilter(); });
        state.appendChild(clear);
      }
    }
  }
  function onActivate(element, action) {
    element.addEventListener('click', action);
    element.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); action(); }
    });
  }
  document.querySelectorAll('.count[data-verdict]').forEach(function (card) {
    onActivate(card, function () {
      var verdict = card.getAttribute('data-verdict') || null;
      filter.verdict = filter.verdict === verdict ? null : verdict;
      applyFilter();
    });
  });
  document.querySelectorAll('.kind-filter').forEach(function (chip) {
    onActivate(chip, function () {
      var kind = chip.getAttribute('data-kind') || null;
      filter.kind = filter.kind === kind ? null : kind;
      applyFilter();
    });
  });
  applyFilter();

  // ---- one section alone: ?section=<name> --------------------------------------------------------
  var alone = params.get('section');
  if (alone && document.getElementById(alone) && document.getElementById(alone).classList.contains('experiment')) {
    body.classList.add('alone');
    document.getElementById(alone).classList.add('chosen');
    document.title = document.getElementById(alone).getAttribute('data-title') + ' · descend lab';
  }

  // ---- projector view: ?view=projector, the button, or the key P -----------------------------------
  function slides() {
    return [].slice.call(document.querySelectorAll('.slide')).filter(function (e) { return e.offsetParent !== null; });
  }
  function current() {
    var list = slides(), top = 0, best = 0, gap = Infinity;
    list.forEach(function (slide, i) {
      var d = Math.abs(slide.getBoundingClientRect().top - top);
      if (d < gap) { gap = d; best = i; }
    });
    return best;
  }
  function go(step) {
    var list = slides();
    if (!list.length) return;
    var index = Math.max(0, Math.min(list.length - 1, current() + step));
    list[index].scrollIntoView({block: 'start'});
  }
  function setProjector(on) {
    var keep = slides()[current()];
    body.classList.toggle('projector', on);
    document.documentElement.classList.toggle('snap', on);
    var button = document.getElementById('projector');
    if (button) { button.setAttribute('aria-pressed', String(on)); button.textContent = on ? 'leave projector view' : 'projector view'; }
    var url = new URL(location.href);
    if (on) url.searchParams.set('view', 'projector'); else url.searchParams.delete('view');
    history.replaceState(null, '', url);
    var redrawn = window.Plotly ? drawAll() : Promise.resolve();
    redrawn.then(function () { if (keep) keep.scrollIntoView({block: 'start'}); });
  }
  var button = document.getElementById('projector');
  if (button) button.addEventListener('click', function () { setProjector(!body.classList.contains('projector')); });
  if (params.get('view') === 'projector') setProjector(true);
  document.addEventListener('keydown', function (event) {
    var target = event.target, typing = target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' ||
                                                   target.tagName === 'SELECT' || target.isContentEditable);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === 'p' || event.key === 'P') { setProjector(!body.classList.contains('projector')); return; }
    if (!body.classList.contains('projector')) return;
    if (event.key === 'Escape') { setProjector(false); return; }
    var forward = {ArrowRight: 1, ArrowDown: 1, PageDown: 1, ' ': 1, j: 1}, backward = {ArrowLeft: 1, ArrowUp: 1, PageUp: 1, k: 1};
    if (forward[event.key] && !event.shiftKey) { event.preventDefault(); go(1); }
    else if (backward[event.key] || (event.key === ' ' && event.shiftKey)) { event.preventDefault(); go(-1); }
  });

  // ---- "open in the playground": the same server as this page, or the address given --------------
  var KEY = 'descend-playground-address', DEFAULT = document.body.getAttribute('data-playground'), chosen = null;
  function stored() { try { return localStorage.getItem(KEY); } catch (error) { return null; } }
  function served() { return /^https?:$/.test(location.protocol) && /\/report\//.test(location.pathname); }
  function address() {
    var base = served() ? location.origin + '/' : (chosen || stored() || DEFAULT);
    return /\/$/.test(base) ? base : base + '/';
  }
  function relink() {
    var base = address();
    document.querySelectorAll('a.playground[data-setup]').forEach(function (link) {
      link.href = base + '#setup=' + link.getAttribute('data-setup');
    });
    var field = document.getElementById('playground-address');
    if (field && document.activeElement !== field) field.value = base;
  }
  var field = document.getElementById('playground-address');
  if (field) field.addEventListener('change', function () {
    chosen = field.value.trim() || null;
    try { if (chosen && chosen !== DEFAULT) localStorage.setItem(KEY, chosen); else localStorage.removeItem(KEY); }
    catch (error) { /* no storage for this page: the links change for this visit only */ }
    relink();
  });
  relink();
})();
"""


# ---------------------------------------------------------------------------------------------------------------
# numbers and the fields of a claim (today's results.json and the richer one, with fallbacks)


def number_text(value: Any) -> str:
    """A number as the report shows it: ``0.0448``, ``1.1``, ``3.31e-4``, ``1e-6``, ``2.5e5``; ``—`` for none.

    Three significant digits; between 10⁻³ and 10⁵ in plain decimals, outside in a short exponent form (the
    playground's ``formatNumber`` in ``static/format.js`` follows the same rule).
    Non-finite values (written as "nan", "inf" in results.json) are shown as such.
    """
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return str(value)
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "−inf")
    if value == 0:
        return "0"
    rounded = float(f"{value:.3g}")  # 99999 → 1e5 and 0.00099999 → 0.001, as the playground shows them
    if 1e-3 <= abs(rounded) < 1e5:
        decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
        text = f"{rounded:.{decimals}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa, exponent = f"{rounded:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


# results.json's interval methods, in words
METHODS = {
    "t": "95% Student-t interval over seeds",
    "t-log": "95% t interval of the log, over seeds",
    "bootstrap": "95% bootstrap interval over seeds",
    "clopper-pearson": "95% Clopper–Pearson interval of the proportion of seeds",
    "wilson": "95% Wilson interval",
}


def interval_of(claim: dict[str, Any]) -> list[float] | None:
    """``[low, high]``: the claim's ``interval``, or the older ``ci``; None for a single exact value (also when it
    is recorded as the interval [v, v] of a deterministic run)."""
    interval = claim.get("interval", claim.get("ci"))
    if not (isinstance(interval, (list, tuple)) and len(interval) == 2):
        return None
    if claim.get("interval_method") == "deterministic" or (claim.get("deterministic") and interval[0] == interval[1]):
        return None
    return list(interval)


def interval_method(claim: dict[str, Any]) -> str:
    """How the interval was computed, in words ("" when there is none)."""
    if interval_of(claim) is None:
        return ""
    method = claim.get("interval_method")
    return METHODS.get(str(method).lower(), str(method)) if method else METHODS["t"]


def _deterministic(claim: dict[str, Any]) -> bool:
    return bool(claim.get("deterministic")) and interval_of(claim) is None


def effect_text(claim: dict[str, Any]) -> str:
    """'1.52 [1.31, 1.73]' (mean and interval), or the single value of a deterministic claim."""
    interval = interval_of(claim)
    if interval is None:
        return number_text(claim.get("mean"))
    low, high = interval
    return f"{number_text(claim.get('mean'))} [{number_text(low)}, {number_text(high)}]"


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number


def derived_reason(claim: dict[str, Any]) -> str:
    """A one-line reason read from the numbers, for a claim whose results.json gives none: where the value or the
    interval lies against the threshold."""
    threshold, direction = _as_float(claim.get("threshold")), claim.get("direction")
    interval = interval_of(claim)
    side = {">": "above", "<": "below"}.get(direction)
    if threshold is None or side is None:
        return str(claim.get("note") or "")
    other = "below" if side == "above" else "above"
    verdict = claim.get("verdict")
    th = number_text(threshold)
    if interval is not None:
        low, high = (number_text(v) for v in interval)
        if verdict == "held":
            return f"whole interval [{low}, {high}] {side} {th}"
        if verdict == "did not hold":
            return f"whole interval [{low}, {high}] {other} {th}: the wrong side"
        if verdict == "inconclusive":
            return f"interval [{low}, {high}] straddles {th}; more seeds may decide it"
        return str(claim.get("note") or "")
    mean = _as_float(claim.get("mean"))
    if claim.get("note") and not claim.get("deterministic"):
        return str(claim["note"])  # one seed, or a non-finite effect: the runner says why
    if mean is None or not math.isfinite(mean):
        return f"measured {number_text(mean)}, which meets no criterion"
    where = side if (mean > threshold if direction == ">" else mean < threshold) else \
        ("at" if mean == threshold else other)
    return f"exact value {number_text(mean)}, {where} {th}{'' if where == side else ': the wrong side'}"


def reason_of(claim: dict[str, Any]) -> tuple[str, bool]:
    """(the one-line reason, whether it was derived here because results.json has none)."""
    given = claim.get("reason")
    if isinstance(given, str) and given.strip():
        return " ".join(given.split()), False
    return derived_reason(claim), True


def source_text(claim: dict[str, Any]) -> str:
    source = claim.get("source", "")
    if isinstance(source, dict):
        return ", ".join(str(v) for v in source.values() if v)
    if isinstance(source, (list, tuple)):
        return "; ".join(map(str, source))
    return str(source)


def seeds_text(claim: dict[str, Any]) -> str:
    """"1 (exact)", "10", or "10 (3 needed)": the seeds run, and the fewest that gave the same verdict."""
    if _deterministic(claim):
        return "1 (exact)"
    n = claim.get("n", len(claim.get("effects", [])) or "?")
    needed = claim.get("seeds_needed")
    if isinstance(needed, int) and not isinstance(needed, bool) and isinstance(n, int) and needed < n:
        return f"{n} ({needed} needed)"
    return str(n)


def verdict_class(verdict: Any) -> str:
    return VERDICT_CLASS.get(verdict, "other")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------------------------------------------------------
# pieces of the page


def _badge(verdict: str) -> str:
    return f'<span class="badge {verdict_class(verdict)}">{html.escape(str(verdict))}</span>'


def _statement(claim: dict[str, Any]) -> str:
    e = html.escape
    quote = claim.get("quote")
    if quote == "verbatim":
        return f'<p class="statement">“{e(claim["statement"])}”</p>'
    tag = ' <span class="tag">paraphrase</span>' if quote == "paraphrase" else ""
    return f'<p class="statement">{e(claim["statement"])}{tag}</p>'


def _values(values: Any) -> str:
    if isinstance(values, (list, tuple)):
        return "{" + ", ".join(number_text(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
                               for v in values) + "}"
    return number_text(values) if isinstance(values, (int, float)) and not isinstance(values, bool) else str(values)


def _grid_values(values: Any) -> str:
    """A grid axis: every value, or its length and ends when it is long (fine grids have 17 values)."""
    if isinstance(values, (list, tuple)) and len(values) > 7:
        return f"{len(values)} values from {_values(values[0])} to {_values(values[-1])}"
    return _values(values)


def _settings(settings: Any) -> str:
    if isinstance(settings, dict):
        return ", ".join(f"{name} {_values(value)}" for name, value in settings.items())
    return _values(settings)


def tuning_table(tuning: Any) -> str:
    """Each tuned optimizer's grid, best setting and whether the best lies at an end of the grid."""
    if not isinstance(tuning, dict) or not tuning:
        return ""
    e = html.escape
    rows = []
    for label, entry in tuning.items():
        entry = entry if isinstance(entry, dict) else {"grid": entry}
        grid = entry.get("grid")
        grid_text = "; ".join(f"{name} ∈ {_grid_values(values)}" for name, values in grid.items()) \
            if isinstance(grid, dict) else _grid_values(grid)
        at_edge, axes = entry.get("at_edge"), entry.get("edges") or []
        notes = []
        if entry.get("flat"):
            notes.append("flat: no setting clearly better")
        if entry.get("at_bound"):
            notes.append(f"{', '.join(map(str, entry['at_bound']))} at its natural bound")
        if at_edge:
            where = f"{', '.join(map(str, axes))} " if axes else ""
            edge = f'<td class="at-edge">⚠ {e(where)}at grid edge{e("; " + "; ".join(notes)) if notes else ""}</td>'
        elif at_edge is not None:
            edge = f'<td>inside the grid{e("; " + "; ".join(notes)) if notes else ""}</td>'
        else:
            edge = "<td></td>"
        rows.append(f"<tr><td>{e(str(label))}</td><td>{e(grid_text)}</td><td>{e(_settings(entry.get('best')))}</td>"
                    f"{edge}</tr>")
    return ('<table class="tuning"><thead><tr><th>optimizer</th><th>grid</th><th>best</th><th>edge</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _claim_block(claim_id: str, claim: dict[str, Any]) -> str:
    e = html.escape
    effects = claim.get("effects") or []
    per_seed = ", ".join(number_text(v) for v in effects)
    seeds = ('<span class="tag">deterministic: one run</span>' if _deterministic(claim)
             else f'<span class="tag">{e(_plural(int(claim.get("n", len(effects)) or 0), "seed"))}</span>')
    kind = f'<span class="tag kind">{e(str(claim["kind"]))}</span>' if claim.get("kind") else ""
    if claim.get("beyond_course"):
        kind += '<span class="tag">beyond the course</span>'
    reason, derived = reason_of(claim)
    method = interval_method(claim)
    center = claim.get("center")
    center_text = f"{e(str(center))} " if center and interval_of(claim) is not None else ""
    shown = [f for f in claim.get("figures") or [] if isinstance(f, str)]
    shown_row = ("<dt>shown in</dt><dd>" + ", ".join(
        f'<a href="#{e(figure_anchor(f))}">{e(_figure_label(f, str(claim.get("experiment", ""))))}</a>'
        for f in shown) + "</dd>") if shown else ""
    effect_note = f" ({e(method)})" if method else ""
    tuning = tuning_table(claim.get("tuning"))
    tuning_row = f"<dt>tuning</dt><dd>{tuning}</dd>" if tuning else ""
    seeds_row = f"; per seed: {e(per_seed)}" if len(effects) > 1 else ""
    return (f'<div class="claim slide {verdict_class(claim.get("verdict"))}" id="claim-{e(claim_id)}">'
            f'<div>{_badge(claim.get("verdict", "?"))} <code>{e(claim_id)}</code>{kind}{seeds}</div>'
            f'{_statement(claim)}<dl>'
            f'<dt>source</dt><dd>{e(source_text(claim))}</dd>'
            f'<dt>measured</dt><dd>{e(str(claim.get("measurement", "")))}</dd>'
            f'<dt>criterion</dt><dd>{e(str(claim.get("criterion", "")))} (fixed before the run)</dd>'
            f'<dt>effect</dt><dd>{center_text}<b>{e(effect_text(claim))}</b>{effect_note}{seeds_row}</dd>'
            f'<dt>why</dt><dd class="{"derived" if derived else ""}">{e(reason)}</dd>{tuning_row}{shown_row}</dl></div>')


def figure_anchor(filename: str) -> str:
    """The id of a figure in the page: ``figure-`` and its file name (``figure-landscapes-quadratic-png``)."""
    return "figure-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in filename)


def _figure_label(filename: str, experiment: str) -> str:
    """"quadratic (interactive)" for landscapes-quadratic-interactive.plotly.json."""
    stem = _figure_stem(filename)
    stem = stem[len(experiment) + 1:] if experiment and stem.startswith(experiment + "-") else stem
    return f"{stem} ({'interactive' if filename.endswith('.plotly.json') else 'image'})"


def _figure_stem(filename: str) -> str:
    for ending in ("-interactive.plotly.json", ".plotly.json", ".png", ".svg"):
        if filename.endswith(ending):
            return filename[: -len(ending)]
    return filename


def _playground_of(figure: dict[str, str], folder: Path) -> dict | None:
    """The playground setup an interactive figure carries (``plots.trajectories(..., playground=...)``)."""
    if figure.get("kind") != "interactive":
        return None
    try:
        spec = json.loads((folder / figure["file"]).read_text())
        found = spec["layout"]["meta"]["playground"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return found if isinstance(found, dict) and isinstance(found.get("setup"), dict) else None


def _playground_link(entry: dict) -> str:
    from ..playground.links import ADDRESS, encode_setup

    e = html.escape
    try:
        encoded = encode_setup(entry["setup"])
    except (TypeError, ValueError):
        return ""  # a setup the page could not read: no link rather than a broken one
    note = f' <span class="note">{e(entry["note"])}</span>' if entry.get("note") else ""
    return (f'<p class="playground-link"><a class="playground" target="_blank" rel="noopener" '
            f'data-setup="{encoded}" href="{e(ADDRESS)}#setup={encoded}">open in the playground ↗</a> '
            f'<span class="note">the same landscape, start, optimizers and settings, to change and rerun.</span>'
            f'{note}</p>')


def _figure(figure: dict[str, str], folder: Path, index: int, playground: str) -> str:
    e = html.escape
    caption = f'<figcaption>{e(figure.get("caption") or "")}</figcaption>' if figure.get("caption") else ""
    if figure.get("kind") == "interactive":
        spec = (folder / figure["file"]).read_text().replace("</", "<\\/")
        return (f'<figure class="slide" id="{e(figure_anchor(figure["file"]))}">'
                f'<div class="plot" id="plot-{index}" data-spec="spec-{index}" '
                f'data-file="{e(figure["file"])}"></div>'
                f'<script type="application/json" id="spec-{index}">{spec}</script>{caption}{playground}</figure>')
    alt = figure.get("caption") or figure["file"]
    return (f'<figure class="slide" id="{e(figure_anchor(figure["file"]))}"><img src="{e(figure["file"])}" '
            f'alt="{e(alt)}" loading="lazy">{caption}'
            f'{playground}</figure>')


def _figures(experiment: dict[str, Any], folder: Path, first_index: int) -> tuple[list[str], int]:
    """The section's figures; a PNG gets the playground link of its interactive twin (same stem)."""
    figures = [f for f in experiment.get("figures", []) if (folder / f["file"]).exists()]
    links = {}
    for figure in figures:
        setup = _playground_of(figure, folder)
        if setup is not None:
            links[_figure_stem(figure["file"])] = _playground_link(setup)
    parts, index = [], first_index
    for figure in figures:
        parts.append(_figure(figure, folder, index, links.get(_figure_stem(figure["file"]), "")))
        index += 1
    return parts, index


def _counts(claims: dict[str, dict]) -> tuple[dict[str, int], dict[str, int]]:
    """Claims per verdict (the four known ones first, in order) and per kind, counted from the claims."""
    verdicts: dict[str, int] = {v: 0 for v in VERDICT_ORDER[:3]}
    kinds: dict[str, int] = {}
    for claim in claims.values():
        verdict = str(claim.get("verdict", "?"))
        verdicts[verdict] = verdicts.get(verdict, 0) + 1
        if claim.get("kind"):
            kinds[str(claim["kind"])] = kinds.get(str(claim["kind"]), 0) + 1
    ordered = {v: verdicts[v] for v in VERDICT_ORDER if v in verdicts}
    ordered.update({v: n for v, n in verdicts.items() if v not in ordered})
    return ordered, kinds


def _marks(claim_ids: list[str], claims: dict[str, dict]) -> str:
    """Small coloured counts of a section's verdicts, for the contents list."""
    tally: dict[str, int] = {}
    for cid in claim_ids:
        verdict = str(claims.get(cid, {}).get("verdict", "?"))
        tally[verdict] = tally.get(verdict, 0) + 1
    return "".join(f'<span class="mark {verdict_class(v)}" title="{n} {html.escape(v)}">{n}</span>'
                   for v, n in sorted(tally.items(), key=lambda item: VERDICT_ORDER.index(item[0])
                                      if item[0] in VERDICT_ORDER else 9))


def _meta_line(report: dict[str, Any]) -> str:
    e = html.escape
    settings, meta = report.get("settings", {}), report.get("meta", {})
    parts = [f'{e(str(settings.get("mode", "?")))} run', f'base seed {e(str(settings.get("seed", "?")))}',
             e(str(settings.get("device", "cpu")))]
    if "total_seconds" in meta:
        parts.append(f'{e(str(meta["total_seconds"]))} s with {e(str(meta.get("workers", "?")))} worker(s) on '
                     f'{e(str(meta.get("machine", "?")))} ({e(str(meta.get("cpu_seconds_total", "?")))} CPU-seconds '
                     'in the runs)')
    if "torch" in meta:
        parts.append(f'torch {e(str(meta["torch"]))}')
    if "date" in meta:
        parts.append(e(str(meta["date"])))
    return " · ".join(parts) + ' · every number in <a href="results.json">results.json</a>'


def write_html(report: dict[str, Any], folder: Path) -> str:
    from ..playground.links import ADDRESS, PORT

    e = html.escape
    claims, experiments = report.get("claims", {}), report.get("experiments", {})
    verdicts, kinds = _counts(claims)
    total = len(claims)

    rows = []
    for cid, c in claims.items():
        reason, derived = reason_of(c)
        kind = f'<span class="tag kind">{e(str(c["kind"]))}</span>' if c.get("kind") else ""
        rows.append(
            f'<tr data-verdict="{e(str(c.get("verdict", "?")))}" data-kind="{e(str(c.get("kind") or ""))}" '
            f'id="row-{e(cid)}"><td>{_badge(c.get("verdict", "?"))}{kind}</td>'
            f'<td><a href="#claim-{e(cid)}">{e(str(c.get("statement", cid)))}</a>'
            f'<span class="source">{e(source_text(c))}</span></td>'
            f'<td>{e(str(c.get("criterion", "")))}</td>'
            f'<td class="num" title="{e(interval_method(c))}">{e(effect_text(c))}</td>'
            f'<td class="num">{e(seeds_text(c))}</td>'
            f'<td class="reason{" derived" if derived else ""}">{e(reason)}</td></tr>')

    cards = [f'<div class="count all" role="button" tabindex="0" aria-pressed="true" data-verdict="">'
             f'<b>{total}</b>all claims</div>']
    for verdict, count in verdicts.items():
        cards.append(f'<div class="count {verdict_class(verdict)}" role="button" tabindex="0" aria-pressed="false" '
                     f'data-verdict="{e(verdict)}" title="show only the claims that {e(verdict)}">'
                     f'<b>{count}</b>{e(verdict)}</div>')
    kind_chips = ""
    if kinds:
        chips = "".join(f'<span class="kind-filter" role="button" tabindex="0" aria-pressed="false" '
                        f'data-kind="{e(kind)}">{e(kind)}: {count}</span>' for kind, count in kinds.items())
        kind_chips = f'<div class="kinds">kind: {chips}</div>'

    contents, sections, index = [], [], 0
    for name, experiment in experiments.items():
        ids = [cid for cid in experiment.get("claims", []) if cid in claims]
        title = str(experiment.get("title", name))
        contents.append(f'<li><a href="#{e(name)}">{e(title)}</a> <span class="marks">{_marks(ids, claims)}</span></li>')
        blocks = "".join(_claim_block(cid, claims[cid]) for cid in ids)
        figures, index = _figures(experiment, folder, index)
        numbers = e(json.dumps(experiment.get("numbers", {}), indent=1))
        seconds = report.get("meta", {}).get("seconds", {}).get(name, [])
        seeds = experiment.get("seeds", [])
        sections.append(
            f'<section class="experiment" id="{e(name)}" data-title="{e(title)}">'
            f'<div class="section-head slide"><p class="alone-note">descend lab · one section of the report · '
            f'<a href="index.html#{e(name)}">the whole report</a></p><h2>{e(title)}</h2>'
            f'<div class="section-links"><a href="#{e(name)}" title="a link to this section">link to this section</a>'
            f'<a href="?section={e(name)}#{e(name)}" class="open-alone">open this section alone</a></div>'
            f'<p class="summary">{e(str(experiment.get("summary", "")))}'
            f'{" (first seed)" if len(seeds) > 1 else ""}</p></div>'
            f'{blocks}{"".join(figures)}'
            f'<details><summary>All measured numbers of the first seed '
            f'({sum(seconds):.1f} s over {_plural(len(seconds), "run")})</summary>'
            f'<pre>{numbers}</pre></details></section>')

    verdict_help = "".join(f"<dt>{e(v)}</dt><dd>{e(VERDICT_MEANING[v])}</dd>" for v in VERDICT_ORDER
                           if v in verdicts)
    kinds_line = ""
    if kinds:
        kinds_line = (" Claims are of two kinds: an <b>experiment</b> measures something that could have come out "
                      "otherwise; a <b>worked check</b> verifies an identity or a derivation (it cannot fail "
                      "unless the code is wrong) and is counted apart.")
    has_playground = 'class="playground"' in "".join(sections)
    playground_help = ""
    if has_playground:
        playground_help = (
            '<div class="playground-help">The landscape figures have <b>open in the playground</b> links that '
            f'open the same setup in descend’s playground. Start it with <code>descend playground --port {PORT}'
            '</code> (it needs <code>pip install \'descend[playground]\'</code>) from the folder that holds '
            f'<code>report/</code>: it then also serves this report, at <code>{e(ADDRESS)}report/</code>, where '
            'every link just works. Playground address for this page: '
            f'<input id="playground-address" type="url" value="{e(ADDRESS)}" aria-label="playground address">'
            '</div>')
    plotly = f'<script src="{PLOTLY_JS}"></script>' if index and (folder / PLOTLY_JS).exists() else ""
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>descend lab</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style></head><body data-playground="{e(ADDRESS)}">
<div class="bar"><a class="name" href="#top">descend lab</a><a class="button" href="#contents">contents</a>
<a class="button" href="#claims">claims</a>
<button id="projector" type="button" aria-pressed="false" title="large type, one figure per screen; keys: → ← to move, P or Esc to leave">projector view</button></div>
<div class="layout" id="top">
<nav class="contents" id="contents" aria-label="contents"><h2>Contents</h2><ol>
<li><a href="#claims">All claims ({total})</a></li>{"".join(contents)}</ol></nav>
<main>
<header><h1>descend lab</h1>
<p>{total} claims from the course material. Each is measured (over seeds, with an interval, where the quantity is
random) against a criterion fixed before the run.{kinds_line} A claim</p>
<dl class="verdicts">{verdict_help}</dl>
<p>{_meta_line(report)}</p></header>
<div id="claims">
<div class="counts" aria-label="filter the claims by verdict">{"".join(cards)}</div>{kind_chips}
<p class="filter-state" id="filter-state" aria-live="polite"></p>
<table class="claims" id="claims-table"><colgroup><col class="verdict"><col class="claim">
<col class="criterion"><col class="effect"><col class="seeds"><col class="why"></colgroup><thead><tr><th>verdict</th><th>claim and source</th><th>criterion</th>
<th>effect [interval]</th><th>seeds</th><th>why</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
</div>
{playground_help}
{"".join(sections)}
</main></div>{plotly}<script>{SCRIPT}</script></body></html>
"""


# ---------------------------------------------------------------------------------------------------------------
# writing, and rebuilding from results.json


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


def rebuild(folder: Path) -> Path:
    """Rewrites ``folder/index.html`` from ``folder/results.json`` and the figure files beside it.

    Nothing else is changed, except that a missing plotly.js is copied in (and added to the report's list of
    its files, so that ``descend lab --out`` still recognises the folder as its own).
    """
    folder = Path(folder)
    results = folder / "results.json"
    try:
        report = json.loads(results.read_text())
    except OSError as error:
        raise ValueError(f"{results}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise ValueError(f"{results}: not valid JSON ({error})") from None
    if not isinstance(report, dict) or not isinstance(report.get("claims"), dict) \
            or not isinstance(report.get("experiments"), dict):
        raise ValueError(f"{results}: not a descend lab results.json (it needs claims and experiments)")
    interactive = any(f.get("kind") == "interactive" for e in report["experiments"].values()
                      for f in e.get("figures", []))
    if interactive and not (folder / PLOTLY_JS).exists() and bundle_plotly(folder):
        try:
            marker = json.loads((folder / MARKER).read_text())
            marker["files"] = sorted(set(marker.get("files", [])) | {PLOTLY_JS})
            (folder / MARKER).write_text(json.dumps(marker, indent=1))
        except (OSError, ValueError, AttributeError):
            pass  # no marker: not a folder the lab wrote, nothing to keep in step
    page = folder / "index.html"
    page.write_text(write_html(report, folder))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m descend.lab.report",
                                     description="rebuild a lab report's index.html from its results.json")
    parser.add_argument("folder", type=Path, help="the report folder (holding results.json)")
    args = parser.parse_args(argv)
    try:
        page = rebuild(args.folder)
    except ValueError as error:
        print(f"descend: error: {error}", file=sys.stderr)
        return 2
    print(f"report: {page.absolute()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
