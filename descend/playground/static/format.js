// descend playground: the page's pure helpers (no page, no server), loaded before app.js and tested on
// their own (tests/test_playground.py runs them under Node): numbers as the page shows them, the setup in
// the address, where a run is taken to have diverged, and which learning rate a new optimizer starts at.
"use strict";

const DIVERGED_ABOVE = 1e10; // |x|, |y| or |f| past this: the run has diverged, whatever the floats still hold

// A number as the page shows it: 3 significant digits, and a short exponent form outside [1e-3, 1e5):
// 1e-6 (never 0.00000), 2.5e-7, 0.0123, 1.5, 1230, 1.2e10; 0 is "0"; "" for a value that is not a number.
function formatNumber(value, digits = 3) {
  if (value === null || value === undefined || value === "") return "";
  const number = Number(value);
  if (Number.isNaN(number)) return String(value);
  if (!Number.isFinite(number)) return number > 0 ? "inf" : "−inf";
  if (number === 0) return "0";
  const rounded = Number(number.toPrecision(digits)), magnitude = Math.abs(rounded); // 99999 → 1e5, not 100000
  if (magnitude >= 1e-3 && magnitude < 1e5) return String(rounded);
  const [mantissa, exponent] = rounded.toExponential(digits - 1).split("e");
  return `${String(Number(mantissa))}e${Number(exponent)}`;
}

// ---- the setup in the address: #setup=<base64url of the JSON, UTF-8, no padding> ---------------
// (descend/playground/links.py writes and reads the same form)
function encodeState(state) {
  const bytes = new TextEncoder().encode(JSON.stringify(state));
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function decodeState(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

// ---- divergence ------------------------------------------------------------------------------
// The server cuts a run where a value stops being finite; a run whose point or loss passes 1e10 has
// diverged too (the page cannot draw it, and no optimizer comes back from there on these landscapes).
// Returns the run cut at its first such point: diverged_at = that index, as the server counts.
function cutDivergence(run, limit = DIVERGED_ABOVE) {
  const far = (p, loss) => Math.abs(p[0]) > limit || Math.abs(p[1]) > limit || Math.abs(loss) > limit;
  const index = run.points.findIndex((p, k) => far(p, run.losses[k]));
  if (index < 0) return { ...run, diverged_reason: run.diverged_at === null ? null : "not finite" };
  const cut = (values) => (values ? values.slice(0, index) : values);
  return {
    ...run, points: cut(run.points), losses: cut(run.losses), gaps: cut(run.gaps), heights: cut(run.heights),
    diverged_at: index, diverged_reason: `passed ${formatNumber(limit)}`,
  };
}

// ---- the learning rate a new optimizer starts at ------------------------------------------------
const PROBE_RATES = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1]; // one request: at most 8 runs

// Given the runs of one probe (one per PROBE_RATES entry, on the landscape's window), the rate whose run
// ends lowest among those that stay finite and in the window and move at least 2% of its size; null
// when none does (the optimizer's own default is kept then).
function chooseRate(rates, runs, window) {
  const [[x0, x1], [y0, y1]] = window;
  const size = Math.hypot(x1 - x0, y1 - y0);
  let best = null;
  runs.forEach((run, i) => {
    if (run.diverged_at !== null || !run.points.length) return;
    const inside = run.points.every((p) => p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1);
    const first = run.points[0], last = run.points[run.points.length - 1];
    const moved = Math.hypot(last[0] - first[0], last[1] - first[1]);
    const final = run.losses[run.losses.length - 1];
    if (!inside || moved < 0.02 * size || !Number.isFinite(final)) return;
    if (best === null || final < best.final) best = { rate: rates[i], final };
  });
  return best === null ? null : best.rate;
}

// ---- which hyperparameters are torch plumbing (shown under "advanced") ---------------------------
const ADVANCED = new Set(["differentiable", "capturable", "state_dtype"]);
function isAdvanced(name) { return ADVANCED.has(name); }

if (typeof module !== "undefined") {
  module.exports = { formatNumber, encodeState, decodeState, cutDivergence, chooseRate, isAdvanced, PROBE_RATES,
    DIVERGED_ABOVE };
}
