"""The lab's HTML report: one section per experiment with its claim, verdict, numbers and figures."""
from __future__ import annotations

import html
import json
from typing import Any

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; }
section { border-top: 1px solid #ddd; padding: 1em 0; }
.verdict { display: inline-block; padding: 0.1em 0.6em; border-radius: 4px; color: white; font-weight: 600; }
.held { background: #2e7d32; } .failed { background: #c62828; }
.claim { font-style: italic; } img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
details pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 12px; }
table.summary td, table.summary th { padding: 0.2em 0.8em; text-align: left; }
"""


def _badge(held: bool) -> str:
    return f'<span class="verdict {"held" if held else "failed"}">{"held" if held else "did not hold"}</span>'


def write_html(report: dict[str, Any]) -> str:
    meta, experiments = report["meta"], report["experiments"]
    held = sum(e["held"] for e in experiments.values())
    rows = "".join(
        f'<tr><td><a href="#{name}">{html.escape(e["title"])}</a></td><td>{_badge(e["held"])}</td>'
        f'<td>{e["seconds"]:.1f} s</td></tr>' for name, e in experiments.items()
    )
    sections = []
    for name, e in experiments.items():
        figures = "".join(f'<img src="{html.escape(f)}" alt="{html.escape(f)}">' for f in e["figures"])
        numbers = html.escape(json.dumps(e["numbers"], indent=2))
        sections.append(
            f'<section id="{name}"><h2>{html.escape(e["title"])} {_badge(e["held"])}</h2>'
            f'<p class="claim">Claim: {html.escape(e["claim"])}</p><p>{html.escape(e["summary"])}</p>{figures}'
            f'<details><summary>All measured numbers ({e["seconds"]:.1f} s)</summary><pre>{numbers}</pre></details>'
            "</section>"
        )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>descend lab</title>
<style>{STYLE}</style></head><body>
<h1>descend lab</h1>
<p class="meta">{held} of {len(experiments)} claims held · {meta["mode"]} run, seed {meta["seed"]}, {meta["device"]} ·
total {meta["total_seconds"]} s on {html.escape(meta["machine"])} · torch {meta["torch"]} · {meta["date"]}</p>
<p>Every experiment states a claim from the optimization literature, measures it, and reports whether it held
in this run. A claim that did not hold is a finding, shown in red. All numbers are in
<a href="results.json">results.json</a>.</p>
<table class="summary"><tr><th>experiment</th><th>verdict</th><th>time</th></tr>{rows}</table>
{''.join(sections)}
</body></html>
"""
