// descend playground: the page asks the server (descend.playground.api) for trajectories and draws them.
// No optimizer math lives here; this file only builds controls, sends the setup and animates the answer.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
// The lab report's colour of each optimizer (descend/lab/style.py, KNOWN; a test keeps the two the same):
// a setup whose runs are all different optimizers shows each in its report colour, others go by position.
const OPTIMIZER_COLORS = {
  "SGD": "#1f77b4", "SGD+momentum": "#17becf", "Nesterov": "#2ca02c", "AdaGrad": "#ff7f0e", "RMSprop": "#9467bd",
  "Adadelta": "#8c564b", "Adam": "#d62728", "AdamW": "#e377c2", "Adafactor": "#bcbd22", "SAM": "#7f7f7f",
  "Lion": "#393b79", "NAdam": "#ad494a", "RAdam": "#637939",
};
const POSITIONS = 1000; // slider resolution
const $ = (id) => document.getElementById(id);

const page = {
  catalog: null,
  state: null, // {landscape, params, start, steps, seed, runs: [{optimizer, hyperparameters, batch}]}
  result: null, // the last answer of /api/run
  surface: null, // {key, data}: the surface of the landscape last drawn
  request: 0,
  animation: null,
  savedMode: false,
};
window.playground = page; // for the end-to-end test and for curious users

// ---- presets: the pictures of the course slides (seed 004) and lecture notes (seed 002) ----------
// Each has two or three sentences of what to notice and the lab claims it illustrates: the page links
// to them in the lab report (/report/, which `descend playground` serves from ./report).
const PRESETS = {
  "Learning rate: too low / just right / too high": {
    landscape: "quadratic", params: { condition: 10, angle: 30 }, start: [-2.5, -1.0], steps: 60, seed: 0,
    runs: [
      { optimizer: "SGD", hyperparameters: { lr: 0.1 } },
      { optimizer: "SGD", hyperparameters: { lr: 1.0 } },
      { optimizer: "SGD", hyperparameters: { lr: 2.1 } },
    ],
    notice: "Three runs of plain gradient descent on a quadratic whose steepest curvature is λ_max = 1. " +
      "At α = 0.1 the path creeps (after 60 steps the loss has only fallen by a factor 4); at α = 1 it " +
      "reaches the minimum; at α = 2.1, just above 2/λ_max = 2, every step overshoots further than the last " +
      "and the run leaves the window.",
    claims: ["gd-diverges-above-two-over-lambda-max", "lr-too-low-needs-many-more-updates", "lr-too-high-diverges"],
  },
  "Momentum β ∈ {0, 0.5, 0.9}, α = 0.001/(1−β), on Rosenbrock (Fig. 4.1)": {
    landscape: "rosenbrock", params: {}, start: [-1.2, 1.0], steps: 1000, seed: 0,
    runs: [
      { optimizer: "SGD momentum (EMA form)", hyperparameters: { lr: 0.001, momentum: 0 } },
      { optimizer: "SGD momentum (EMA form)", hyperparameters: { lr: 0.002, momentum: 0.5 } },
      { optimizer: "SGD momentum (EMA form)", hyperparameters: { lr: 0.01, momentum: 0.9 } },
    ],
    notice: "The lecture notes' Figure 4.1: the EMA momentum v ← βv + (1−β)g settles at the gradient on a " +
      "steady slope, so with α = 0.001/(1−β) the β = 0.9 run takes steps ten times as long as β = 0 (plain " +
      "gradient descent) once it rolls. After 1000 steps β = 0.9 is within 0.011 of the minimum (1, 1), " +
      "β = 0.5 at 0.55 and β = 0 still 1.1 away, crawling along the valley floor.",
    claims: ["momentum-accelerates-on-rosenbrock"],
  },
  "Zigzag vs momentum (ill-conditioned quadratic)": {
    landscape: "quadratic", params: { condition: 20, angle: 0, scale: 4, span: 2 }, start: [-5, -2], steps: 100,
    seed: 0,
    runs: [
      { optimizer: "SGD", hyperparameters: { lr: 0.45 } },
      { optimizer: "SGD momentum (velocity form)", hyperparameters: { lr: 0.45, momentum: 0.5 } },
    ],
    notice: "The lab's quadratic 0.1x² + 2y² at one learning rate α = 0.45, just under the steep direction's " +
      "limit 2/λ_max = 0.5. Plain SGD zigzags across the valley (y flips sign every step) and creeps along " +
      "it; with momentum μ = 0.5 the alternating gradients cancel in the velocity, the zigzag dies after a few " +
      "swings and the steady pull along the valley adds up: 22 steps to within 0.01 of the minimum instead " +
      "of 66.",
    claims: ["momentum-beats-sgd-on-ill-conditioned-quadratic"],
  },
  "Nesterov: look-ahead with α/(1−β) retraces the reformulated form": {
    landscape: "quadratic", params: { condition: 50, angle: 30 }, start: [-2.5, 2.0], steps: 150, seed: 0,
    runs: [
      { optimizer: "SGD momentum (velocity form)", hyperparameters: { lr: 0.3, momentum: 0.9 } },
      { optimizer: "Nesterov (reformulated)", hyperparameters: { lr: 0.3, momentum: 0.9 } },
      { optimizer: "Nesterov (look-ahead)", hyperparameters: { lr: 3.0, momentum: 0.9 } },
    ],
    notice: "Only two paths are visible: look-ahead momentum (eqs. 4.7–4.8, an EMA) at α = 3 = 0.3/(1−β) is " +
      "the same update as the reformulated Nesterov step at α = 0.3, so runs 2 and 3 lie on top of each other " +
      "(the EMA buffer is (1−β) times the velocity). Heavy ball at the same α and μ overshoots the valley " +
      "floor and needs 91 steps to within 0.01 of the minimum, Nesterov 39.",
    claims: ["nesterov-forms-agree-after-change-of-variable", "nesterov-slightly-better-than-heavy-ball"],
  },
  "SGD stays in the convex hull (Fig. 4.2)": {
    landscape: "convex-hull", params: { batch: 1, noise: 0, spread: 1 }, start: [-2.5, 2.5], steps: 300, seed: 0,
    runs: [
      { optimizer: "SGD", hyperparameters: { lr: 0.05 }, batch: 5 },
      { optimizer: "SGD", hyperparameters: { lr: 0.05 }, batch: 1 },
    ],
    notice: "Gradient descent (all five samples each step) walks to the minimum of C and stops there. SGD with " +
      "one sample per step heads the same way, but each step pulls it toward one sample's minimizer uᵢ, and " +
      "all of those lie in the green hull: once inside, it keeps jumping around in the hull and never settles.",
    claims: ["sgd-stays-inside-convex-hull", "gd-converges-where-sgd-keeps-moving"],
  },
  "Adam with and without bias correction": {
    landscape: "beale", params: {}, start: [1.0, 1.5], steps: 500, seed: 0,
    runs: [
      { optimizer: "Adam", hyperparameters: { lr: 0.05 } },
      { optimizer: "Adam (no bias correction)", hyperparameters: { lr: 0.05 } },
      { optimizer: "Adam", hyperparameters: { lr: 0.15 } },
    ],
    notice: "Without bias correction the first step is (1−β₁)/√(1−β₂) = 3.2 times α per coordinate, and the " +
      "steps stay several α long for hundreds of steps (v's correction 1 − β₂ᵗ is still 0.39 at t = 500): " +
      "uncorrected Adam is Adam with a larger step than α says. That is why run 2 ends lower than run 1 here; " +
      "corrected Adam at α = 0.15 (run 3) ends lower still. Bias correction makes α mean what it says.",
    claims: ["uncorrected-adam-first-step-is-inflated", "corrected-adam-steps-stay-near-alpha"],
  },
  "Escaping a saddle": {
    landscape: "saddle", params: {}, start: [1.0, 0.001], steps: 150, seed: 0,
    runs: [
      { optimizer: "Adam", hyperparameters: { lr: 0.05 } },
      { optimizer: "SGD", hyperparameters: { lr: 0.05 } },
      { optimizer: "SGD", hyperparameters: { lr: 0.2 } },
    ],
    notice: "The start lies 0.001 off the ridge y = 0, where the gradient across it (−2y) is tiny. At the same " +
      "α = 0.05 Adam divides by the size of that gradient, moves about α per step and is off the saddle " +
      "(|y| > 1) by step 20, while SGD's y grows only by 1 + 2α per step: 76 steps. SGD at α = 0.2 is off in 22, " +
      "so \"faster\" depends on the rates compared: the lab compares each at its best rate.",
    claims: ["adaptive-methods-escape-saddle-faster"],
  },
};

function defaultState() {
  return {
    landscape: "quadratic", params: { condition: 10, angle: 30 }, start: [-2.5, 2.0], steps: 200, seed: 0,
    runs: [
      { optimizer: "SGD", hyperparameters: { lr: 0.5 } },
      { optimizer: "Adam", hyperparameters: { lr: 0.1 } },
    ],
  };
}

// ---- sliders: positions 0..POSITIONS <-> values, on the scale the server chose -----------------
function niceNumber(value) {
  return value === 0 ? 0 : Number(value.toPrecision(3));
}

function scaleOf(spec) {
  const N = POSITIONS;
  if (spec.scale === "log") {
    const a = Math.log10(spec.low), b = Math.log10(spec.high), first = spec.zero ? 1 : 0;
    return {
      toValue: (p) => (spec.zero && p === 0 ? 0 : niceNumber(10 ** (a + ((p - first) / (N - first)) * (b - a)))),
      toPos: (v) => (spec.zero && v <= 0 ? 0 :
        Math.round(first + ((Math.log10(Math.max(v, 1e-300)) - a) / (b - a)) * (N - first))),
    };
  }
  if (spec.scale === "decay") { // β with the slider on log10(1 − β)
    const a = Math.log10(1 - spec.low), b = Math.log10(1 - spec.high);
    return {
      toValue: (p) => { const gap = niceNumber(10 ** (a + (p / N) * (b - a))); return Number((1 - gap).toPrecision(12)); },
      toPos: (v) => Math.round(((Math.log10(Math.max(1 - v, 1e-300)) - a) / (b - a)) * N),
    };
  }
  return {
    toValue: (p) => niceNumber(spec.low + (p / N) * (spec.high - spec.low)),
    toPos: (v) => Math.round(((v - spec.low) / (spec.high - spec.low)) * N),
  };
}

function clampPos(p) { return Math.max(0, Math.min(POSITIONS, Number.isFinite(p) ? p : 0)); }

function format(value) { return formatNumber(value, 4); } // format.js: 1e-6, never 0.000001 or 0.00000

// One control: a checkbox, or a slider with a number box (the box takes any number, so that an
// out-of-range value reaches the optimizer and its own error message comes back).
function makeKnob(spec, value, onChange) {
  const box = document.createElement("div");
  box.className = "knob" + (spec.scale === "bool" ? " bool" : "");
  const name = document.createElement("label");
  name.className = "name";
  box.appendChild(name);
  if (spec.scale === "bool") {
    const check = document.createElement("input");
    check.type = "checkbox";
    check.checked = Boolean(value);
    check.dataset.name = spec.name;
    check.addEventListener("change", () => onChange(check.checked));
    name.append(check, spec.label || spec.name);
    return box;
  }
  const scale = scaleOf(spec);
  const slider = document.createElement("input");
  slider.type = "range"; slider.min = 0; slider.max = POSITIONS; slider.step = spec.integer ? "any" : 1;
  slider.dataset.name = spec.name;
  const number = document.createElement("input");
  number.type = "number"; number.step = "any"; number.dataset.name = spec.name;
  let enabled = null;
  if (spec.optional) {
    enabled = document.createElement("input");
    enabled.type = "checkbox";
    enabled.title = "off: None (the class's default)";
    enabled.checked = value !== null && value !== undefined;
    name.append(enabled);
  }
  name.append(spec.label || spec.name);
  const show = (v) => {
    const off = v === null || v === undefined;
    box.classList.toggle("disabled", off);
    slider.disabled = number.disabled = off;
    if (!off) { slider.value = clampPos(scale.toPos(v)); number.value = format(v); }
  };
  show(value);
  slider.addEventListener("input", () => {
    let v = scale.toValue(Number(slider.value));
    if (spec.integer) v = Math.round(v);
    number.value = format(v);
    onChange(v);
  });
  number.addEventListener("change", () => {
    const v = number.value.trim() === "" ? NaN : Number(number.value);
    if (Number.isFinite(v)) slider.value = clampPos(scale.toPos(v));
    onChange(Number.isFinite(v) ? v : number.value);
  });
  if (enabled) {
    enabled.addEventListener("change", () => {
      const v = enabled.checked ? spec.default ?? scale.toValue(POSITIONS / 2) : null;
      show(v);
      onChange(v);
    });
  }
  box.append(slider, number);
  return box;
}

// ---- colours ----------------------------------------------------------------------------------------
// the report's name for what a run is: SGD with momentum is "SGD+momentum", with nesterov "Nesterov"
function familyOf(run) {
  const entry = entryOf(run.optimizer), h = run.hyperparameters || {};
  if (!entry) return null;
  if (entry.class === "SGD") {
    if (run.optimizer.startsWith("Nesterov") || h.nesterov) return "Nesterov";
    if (run.optimizer.startsWith("SGD momentum") || h.momentum > 0) return "SGD+momentum";
    return "SGD";
  }
  return { Adagrad: "AdaGrad" }[entry.class] || entry.class;
}

function runColor(index) {
  const runs = page.state.runs, families = runs.map(familyOf);
  const distinct = families.every((f, i) => f in OPTIMIZER_COLORS && families.indexOf(f) === i);
  return distinct ? OPTIMIZER_COLORS[families[index]] : COLORS[index % COLORS.length];
}

// ---- the controls ------------------------------------------------------------------------------
function entryOf(name) { return page.catalog.optimizers[name]; }

function defaultsOf(name) {
  const values = {};
  for (const h of entryOf(name).hyperparameters) values[h.name] = h.default;
  return values;
}

function buildLandscapeControls() {
  const s = page.state, info = page.catalog.landscapes[s.landscape];
  $("landscape").value = s.landscape;
  $("formula").textContent = info.formula;
  const knobs = $("landscape-knobs");
  knobs.replaceChildren();
  for (const knob of info.knobs) {
    const spec = { ...knob, scale: knob.log ? "log" : "linear" };
    if (knob.name === "batch") spec.high = sampleCount();
    if (!(knob.name in s.params)) s.params[knob.name] = knob.default;
    knobs.appendChild(makeKnob(spec, s.params[knob.name], (v) => { s.params[knob.name] = v; changed(); }));
  }
  $("start-x").value = format(s.start[0]);
  $("start-y").value = format(s.start[1]);
  $("steps").value = s.steps;
  $("seed").value = s.seed;
}

// the number of per-sample losses of a stochastic landscape (5, or as many centers as the setup gives)
function sampleCount() {
  const centers = page.state.params.centers;
  return Array.isArray(centers) && centers.length ? centers.length : 5;
}

// A hyperparameter's control; torch's plumbing goes under "advanced" (format.js: isAdvanced).
function makeHyperparameter(run, h) {
  if (h.name === "state_dtype") { // a dtype, not a number: say what it is rather than offer a slider
    const line = document.createElement("div");
    line.className = "knob fixed";
    line.dataset.name = h.name;
    line.textContent = "state_dtype: None (the state takes the parameter's dtype, float64 here)";
    return line;
  }
  return makeKnob(h, run.hyperparameters[h.name], (v) => { run.hyperparameters[h.name] = v; changed(); });
}

function buildRuns() {
  const box = $("runs");
  box.replaceChildren();
  const stochastic = page.catalog.landscapes[page.state.landscape].stochastic;
  page.state.runs.forEach((run, index) => {
    const card = document.createElement("div");
    card.className = "run";
    card.style.setProperty("--color", runColor(index));
    card.dataset.index = index;
    const head = document.createElement("div");
    head.className = "run-head";
    const select = document.createElement("select");
    select.className = "optimizer";
    for (const name of Object.keys(page.catalog.optimizers)) select.add(new Option(name, name));
    select.value = run.optimizer;
    select.addEventListener("change", () => {
      const lr = run.hyperparameters.lr;
      run.optimizer = select.value;
      run.hyperparameters = defaultsOf(select.value);
      if (lr !== undefined && "lr" in run.hyperparameters && run.hyperparameters.lr !== null) run.hyperparameters.lr = lr;
      buildRuns();
      changed();
    });
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×"; remove.title = "remove";
    remove.addEventListener("click", () => { page.state.runs.splice(index, 1); buildRuns(); changed(); });
    head.append(select, remove);
    card.appendChild(head);
    const note = document.createElement("div");
    note.className = "note";
    note.textContent = entryOf(run.optimizer).note;
    card.appendChild(note);
    if (stochastic) {
      const spec = { name: "batch", label: "mini-batch (this optimizer)", scale: "linear", low: 1, high: sampleCount(),
        integer: true };
      const own = run.batch ?? page.state.params.batch;
      card.appendChild(makeKnob(spec, own, (v) => { run.batch = v; changed(); }));
    }
    const defaults = defaultsOf(run.optimizer);
    const advanced = document.createElement("details");
    advanced.className = "advanced";
    advanced.innerHTML = "<summary>advanced: torch options descend takes for compatibility</summary>";
    for (const h of entryOf(run.optimizer).hyperparameters) {
      if (!(h.name in run.hyperparameters)) run.hyperparameters[h.name] = defaults[h.name];
      (isAdvanced(h.name) ? advanced : card).appendChild(makeHyperparameter(run, h));
    }
    if (advanced.children.length > 1) card.appendChild(advanced);
    if (run.note) {
      const chosen = document.createElement("div");
      chosen.className = "note chosen-rate";
      chosen.textContent = run.note;
      card.appendChild(chosen);
    }
    const status = document.createElement("div");
    status.className = "status";
    card.appendChild(status);
    box.appendChild(card);
  });
  $("add-run").disabled = page.state.runs.length >= page.catalog.max_runs;
}

function buildAll() {
  buildLandscapeControls();
  buildRuns();
}

// Whether the page still shows the preset: every value the preset sets is as it set it.
function asPreset(state, preset) {
  const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
  const setsAll = (given, now) => Object.entries(given || {}).every(([key, value]) => same(now?.[key], value));
  return state.landscape === preset.landscape && same(state.start, preset.start) && state.steps === preset.steps &&
    state.seed === preset.seed && setsAll(preset.params, state.params) && state.runs.length === preset.runs.length &&
    preset.runs.every((run, i) => state.runs[i].optimizer === run.optimizer &&
      (state.runs[i].batch ?? null) === (run.batch ?? null) && setsAll(run.hyperparameters, state.runs[i].hyperparameters));
}

// What to notice in a preset, with links to its claims in the lab report (served at /report/).
function showNotice() {
  const box = $("notice"), preset = PRESETS[page.state.preset];
  if (!preset) { box.hidden = true; box.replaceChildren(); return; }
  const text = document.createElement("p");
  text.textContent = preset.notice;
  const links = document.createElement("p");
  links.className = "claims";
  links.append("In the lab report: ");
  preset.claims.forEach((id, i) => {
    const link = document.createElement("a");
    link.href = `/report/index.html#claim-${id}`;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = id;
    if (i) links.append(", ");
    links.append(link);
  });
  const heading = document.createElement("h2");
  heading.textContent = asPreset(page.state, preset) ? "What to notice" : "What to notice (in the preset as it was)";
  box.replaceChildren(heading, text, links);
  box.hidden = false;
}

function applyState(state) {
  const landscape = page.catalog.landscapes[state.landscape];
  if (!landscape) throw new Error(`unknown landscape ${state.landscape}`);
  // a hand-edited or older link may leave fields out: the landscape's own defaults fill them
  state.params = { ...(state.params || {}) };
  state.start = Array.isArray(state.start) && state.start.length === 2 ? state.start : [...landscape.start];
  state.steps = Number.isInteger(state.steps) ? state.steps : 200;
  state.seed = Number.isInteger(state.seed) ? state.seed : 0;
  state.runs = (state.runs || []).slice(0, page.catalog.max_runs);
  if (state.preset !== undefined && !PRESETS[state.preset]) delete state.preset;
  page.state = state;
  $("preset").value = state.preset || "";
  for (const run of state.runs) {
    if (!entryOf(run.optimizer)) throw new Error(`unknown optimizer ${run.optimizer}`);
    run.hyperparameters = { ...defaultsOf(run.optimizer), ...run.hyperparameters };
  }
  buildAll();
  changed();
}

// ---- the URL holds the whole setup ------------------------------------------------------------
function stateFromUrl() {
  const match = location.hash.match(/setup=([A-Za-z0-9_-]+)/);
  if (!match) return null;
  try {
    const state = decodeState(match[1]);
    if (!page.catalog.landscapes[state.landscape] || !Array.isArray(state.runs)) throw new Error("not a setup");
    return state;
  } catch (error) {
    showMessage(`The link's setup could not be read (${error.message}); showing the default one.`);
    return null;
  }
}

// the state without what only this page's session needs (the note on how a learning rate was chosen)
function stateForUrl() {
  return { ...page.state, runs: page.state.runs.map(({ note, ...run }) => run) };
}

function shareUrl() {
  return `${location.origin}${location.pathname}#setup=${encodeState(stateForUrl())}`;
}

// ---- asking the server --------------------------------------------------------------------------
// A new optimizer's learning rate: the class's default often barely moves on a 2-D landscape (SGD's 1e-3,
// Lion's 1e-4), so the page tries PROBE_RATES on this landscape, from this start, and keeps the one that
// ends lowest without diverging or leaving the window (format.js: chooseRate).
async function startingRate(run) {
  if (!("lr" in run.hyperparameters) || run.hyperparameters.lr === null) return; // e.g. Adafactor's relative step
  const s = page.state;
  const body = {
    landscape: s.landscape, landscape_params: s.params, start: s.start, steps: Math.min(s.steps, 500), seed: s.seed,
    surface: false,
    runs: PROBE_RATES.map((lr) => ({ optimizer: run.optimizer, hyperparameters: { ...run.hyperparameters, lr } })),
  };
  try {
    const response = await fetch("/api/run", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body) });
    if (!response.ok) return;
    const answer = await response.json();
    const rate = chooseRate(PROBE_RATES, answer.runs.map((r) => cutDivergence(r)), answer.landscape.window);
    if (rate !== null) {
      run.hyperparameters.lr = rate;
      run.note = `lr ${format(rate)}, chosen when this optimizer was added: of the rates ` +
        `${PROBE_RATES.map((r) => format(r)).join(", ")} tried here, it ends lowest without diverging or leaving ` +
        "the window";
    }
  } catch (error) {
    // no answer: keep the class's default; compute() reports a server that is gone
  }
}

let pending = null;
function changed() {
  history.replaceState(null, "", `#setup=${encodeState(stateForUrl())}`);
  showNotice();
  clearTimeout(pending);
  pending = setTimeout(compute, 40);
}

function showMessage(text) {
  $("message").hidden = !text;
  $("message").textContent = text || "";
}

function setupRequest() {
  const s = page.state;
  const key = JSON.stringify([s.landscape, s.params]);
  return {
    key,
    body: {
      landscape: s.landscape, landscape_params: s.params, start: s.start, steps: s.steps, seed: s.seed,
      runs: s.runs.map((r) => ({ optimizer: r.optimizer, hyperparameters: r.hyperparameters, batch: r.batch ?? null })),
      surface: !page.surface || page.surface.key !== key,
    },
  };
}

async function compute() {
  if (page.savedMode) return;
  const id = ++page.request;
  const { key, body } = setupRequest();
  document.body.dataset.status = "computing";
  let answer, ok;
  try {
    const response = await fetch("/api/run", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    ok = response.ok;
    answer = await response.json();
  } catch (error) {
    if (id !== page.request) return;
    showMessage(`The playground server did not answer (${error.message}). Is \`descend playground\` still running?`);
    document.body.dataset.status = "error";
    return;
  }
  if (id !== page.request) return; // a newer setup is on its way
  document.querySelectorAll(".run").forEach((card) => {
    card.classList.remove("failed");
    card.querySelector(".status").textContent = "";
  });
  if (!ok) {
    showMessage(answer.error);
    if (answer.run !== null && answer.run !== undefined) {
      const card = document.querySelector(`.run[data-index="${answer.run}"]`);
      if (card) { card.classList.add("failed"); card.querySelector(".status").textContent = answer.error; }
    }
    document.body.dataset.status = "error";
    return;
  }
  showMessage("");
  if (answer.surface) page.surface = { key, data: answer.surface };
  answer.runs = answer.runs.map((run) => cutDivergence(run)); // past 1e10 is diverged, as non-finite is
  page.result = answer;
  $("formula").textContent = answer.landscape.formula;
  draw();
}

// ---- drawing ------------------------------------------------------------------------------------
const AXIS = { zeroline: false, showgrid: false, mirror: true, ticks: "outside", linecolor: "#aab2bf" };
const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };
const COLORSCALE = [[0, "#fdfdfd"], [0.35, "#d9dde5"], [0.7, "#9aa3b5"], [1, "#4a5366"]];

function labelOf(run, index) {
  const h = run.hyperparameters, parts = [];
  for (const name of ["lr", "momentum", "betas[0]", "betas[1]", "rho"]) {
    if (name in h && h[name] !== null) parts.push(`${name}=${format(h[name])}`);
  }
  if (run.batch) parts.push(`batch=${run.batch}`);
  return `${index + 1}. ${run.optimizer}${parts.length ? " (" + parts.join(", ") + ")" : ""}`;
}

function draw() {
  const result = page.result, surface = page.surface.data, info = result.landscape, s = page.state;
  const [[x0, x1], [y0, y1]] = info.window;
  const zLabel = info.log_scale ? "log₁₀(1 + f − f*)" : "f";
  // contour levels evenly spaced in sqrt(f − f*): a quadratic's ellipses then come evenly spaced
  // (log-scale landscapes are drawn on their log heights as they are)
  const lowest = Math.min(...surface.height.flat().filter((z) => z !== null));
  const levels = info.log_scale ? surface.height
    : surface.height.map((row) => row.map((z) => (z === null ? null : Math.sqrt(Math.max(z - lowest, 0)))));
  const contour = [{
    type: "contour", x: surface.x, y: surface.y, z: levels, colorscale: COLORSCALE, ncontours: 28,
    contours: { coloring: "fill" }, line: { width: 0.5, color: "rgba(255,255,255,0.6)" }, showscale: false,
    hoverinfo: "skip",
  }];
  if (info.hull) {
    const hull = [...info.hull, info.hull[0]];
    contour.push({ x: hull.map((p) => p[0]), y: hull.map((p) => p[1]), mode: "lines", name: "convex hull S",
      line: { color: "#2ca02c", width: 2 }, hoverinfo: "skip", showlegend: false });
    contour.push({ x: info.samples.map((p) => p[0]), y: info.samples.map((p) => p[1]), mode: "markers",
      marker: { color: "#2ca02c", size: 7, symbol: "circle-open" }, hoverinfo: "skip", showlegend: false });
  }
  contour.push({ x: info.minima.map((m) => m[0]), y: info.minima.map((m) => m[1]), mode: "markers",
    marker: { symbol: "star", size: 12, color: "#ffd400", line: { color: "#333", width: 1 } }, name: "minimum",
    hoverinfo: "skip", showlegend: false });
  const frame = {
    margin: { l: 44, r: 10, t: 30, b: 36 }, dragmode: false,
    xaxis: { ...AXIS, range: [x0, x1], title: { text: "x", standoff: 4 } },
    yaxis: { ...AXIS, range: [y0, y1], title: { text: "y", standoff: 4 } }, showlegend: false,
  };
  Plotly.react("contour-base", contour, { ...frame, title: { text: info.title, font: { size: 14 } } }, CONFIG);
  // The paths live on a transparent plot laid exactly over the contours: moving them (every animation
  // frame) then never recomputes the contours.
  const paths = [{ x: [s.start[0]], y: [s.start[1]], mode: "markers", name: "start", hoverinfo: "skip",
    marker: { symbol: "circle", size: 10, color: "#fff", line: { color: "#111", width: 2 } } }];
  const pathIndex = paths.length;
  result.runs.forEach((run, i) => paths.push({
    x: [], y: [], mode: "lines+markers", name: labelOf(s.runs[i], i), line: { color: runColor(i), width: 2 },
    marker: { size: 3 }, text: run.points.map((p) => `x = ${format(p[0])}<br>y = ${format(p[1])}`),
    hovertemplate: `${run.optimizer}<br>%{text}<extra></extra>`,
  }));
  const headIndex = paths.length;
  result.runs.forEach((run, i) => paths.push({
    x: [], y: [], mode: "markers", hoverinfo: "skip",
    marker: { size: 9, color: runColor(i), line: { color: "#fff", width: 1.5 } },
  }));
  const hidden = { ...AXIS, showticklabels: false, showline: false, ticks: "", title: { text: "" } };
  Plotly.react("contour", paths, {
    ...frame, xaxis: { ...hidden, range: [x0, x1] }, yaxis: { ...hidden, range: [y0, y1] },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", hovermode: "closest",
  }, { ...CONFIG, displayModeBar: false });
  page.figure = { contour, paths, layout: { ...frame, title: { text: info.title, font: { size: 14 } } } };

  const zs = surface.height.flat().filter((z) => z !== null);
  const lift = 0.02 * (Math.max(...zs) - Math.min(...zs));
  const surfaceTraces = [{
    type: "surface", x: surface.x, y: surface.y, z: surface.height, colorscale: COLORSCALE, opacity: 0.92,
    showscale: false, contours: { z: { show: true, usecolormap: true, project: { z: true } } }, hoverinfo: "skip",
  }];
  result.runs.forEach((run, i) => surfaceTraces.push({
    type: "scatter3d", mode: "lines", x: [], y: [], z: [], line: { color: runColor(i), width: 6 },
    name: run.optimizer, hoverinfo: "skip",
  }));
  const oldCamera = document.getElementById("surface").layout?.scene?.camera;
  Plotly.react("surface", surfaceTraces, {
    margin: { l: 0, r: 0, t: 30, b: 0 }, title: { text: "drag to rotate", font: { size: 12, color: "#6b7585" } },
    showlegend: false, uirevision: "keep",
    scene: { xaxis: { title: { text: "x" }, range: [x0, x1] }, yaxis: { title: { text: "y" }, range: [y0, y1] },
      zaxis: { title: { text: zLabel }, range: [Math.min(...zs), Math.max(...zs) + 2 * lift] },
      camera: oldCamera || { eye: { x: -1.4, y: -1.5, z: 1.1 } }, aspectmode: "manual", aspectratio: { x: 1, y: 1, z: 0.6 } },
  }, CONFIG);

  const lossTraces = result.runs.map((run, i) => ({ // the first point now, so that the legend lists the run
    x: run.gaps.length ? [0] : [], y: lossValues(run).slice(0, 1), mode: "lines", line: { color: runColor(i), width: 2 },
    name: labelOf(s.runs[i], i) + (run.diverged_at !== null ? ` — diverged at step ${run.diverged_at}` : ""),
  }));
  Plotly.react("loss", lossTraces, {
    margin: { l: 60, r: 10, t: 10, b: 36 },
    xaxis: { ...AXIS, title: { text: "step", standoff: 4 }, range: [0, Math.max(1, s.steps)] },
    yaxis: { ...AXIS, ...lossAxis(result) }, showlegend: true,
    legend: { x: 1, xanchor: "right", y: 1, bgcolor: "rgba(255,255,255,0.85)", font: { size: 11 } },
  }, CONFIG);

  page.traces = { pathIndex, headIndex, lift };
  describeRuns();
  const longest = Math.max(0, ...result.runs.map((r) => r.points.length - 1));
  $("scrub").max = longest;
  animate(longest);
}

// The loss plot's y axis: f − f* in decades, or f itself (linear) on a landscape without a minimum.
function lossAxis(result) {
  if (result.landscape.bounded === false) {
    const values = result.runs.flatMap((r) => r.losses);
    const [lowest, highest] = values.length ? [Math.min(...values), Math.max(...values)] : [-1, 1];
    const pad = 0.05 * Math.max(1, highest - lowest);
    return { title: { text: "f (no minimum: f itself)", standoff: 4 }, exponentformat: "power",
      range: [lowest - pad, highest + pad] };
  }
  const gaps = result.runs.flatMap((r) => r.gaps.filter((g) => g > 0));
  const first = Math.max(...result.runs.map((r) => r.gaps[0] ?? 0), 1e-300);
  const low = gaps.length ? Math.log10(Math.min(...gaps)) : -1;
  // a diverging run would squash the others: the axis stops three decades above the starting loss
  const high = gaps.length ? Math.min(Math.log10(Math.max(...gaps)), Math.log10(first) + 3) : 1;
  const pad = Math.max(0.2, 0.05 * (high - low));
  return { type: "log", title: { text: "f − f*", standoff: 4 }, exponentformat: "power",
    range: [low - pad, high + pad], ...(high - low < 8 ? { dtick: 1 } : {}) }; // decades only, no 2s and 5s
}

// what the loss plot draws for a run: f − f* (gaps at or below 0 cannot go on the log axis), or f itself
// on a landscape without a minimum
function lossValues(run) {
  if (page.result.landscape.bounded === false) return run.losses;
  return run.gaps.map((g) => (g > 0 ? g : null));
}

function describeRuns() {
  const notes = [];
  const [[x0, x1], [y0, y1]] = page.result.landscape.window;
  page.result.runs.forEach((run, i) => {
    const last = run.points[run.points.length - 1];
    const head = `<b style="color:${runColor(i)}">${i + 1}. ${run.optimizer}</b>`;
    if (run.diverged_at !== null) {
      const why = run.diverged_reason === "not finite" || !run.diverged_reason ? "stopped being finite"
        : `passed ${formatNumber(DIVERGED_ABOVE)} in size`;
      notes.push(`${head}: <span class="bad">diverged: the loss or the parameters ${why} at step ${run.diverged_at}; the path is cut there</span>`);
    } else if (last) {
      const outside = run.points.findIndex((p) => p[0] < x0 || p[0] > x1 || p[1] < y0 || p[1] > y1);
      const where = `ends at (${format(last[0])}, ${format(last[1])}), f = ${format(run.losses[run.losses.length - 1])}`;
      notes.push(`${head}: ${where}${outside >= 0 ? ` <span class="bad">(left the window at step ${outside})</span>` : ""}`);
    }
    const card = document.querySelector(`.run[data-index="${i}"]`);
    if (card) {
      card.style.setProperty("--color", runColor(i)); // a hyperparameter (momentum) may have changed its family
      card.querySelector(".status").textContent = run.diverged_at !== null ? `diverged at step ${run.diverged_at}` : "";
    }
  });
  $("legend-notes").innerHTML = notes.join("<br>");
}

// x and y of every path up to step k; points far outside the window (a diverging run reaches 1e150)
// become gaps, which SVG could not draw anyway
function pathsUpTo(k) {
  const [[x0, x1], [y0, y1]] = page.result.landscape.window;
  const far = 100 * Math.max(x1 - x0, y1 - y0);
  const near = (p) => Math.abs(p[0] - (x0 + x1) / 2) < far && Math.abs(p[1] - (y0 + y1) / 2) < far;
  const upTo = page.result.runs.map((r) => r.points.slice(0, k + 1));
  return {
    xs: upTo.map((points) => points.map((p) => (near(p) ? p[0] : null))),
    ys: upTo.map((points) => points.map((p) => (near(p) ? p[1] : null))),
  };
}

const QUICK = { transition: { duration: 0 }, frame: { duration: 0, redraw: false }, mode: "immediate" };

// Shows the paths up to step k.  Plotly.animate without redraw moves only the path traces, so the
// contours are not recomputed for every frame; the 3-D plot must redraw, so it follows less often.
function showUpTo(k, full3d = true) {
  const { pathIndex, headIndex, lift } = page.traces;
  const runs = page.result.runs;
  const { xs, ys } = pathsUpTo(k);
  const paths = runs.map((_, i) => pathIndex + i), heads = runs.map((_, i) => headIndex + i);
  // every trace of the plot goes into the frame: Plotly.animate drops the scatter traces left out of it
  const start = page.state.start;
  const moved = [
    { x: [start[0]], y: [start[1]] },
    ...runs.map((_, i) => ({ x: xs[i], y: ys[i] })),
    ...runs.map((_, i) => ({ x: xs[i].slice(-1), y: ys[i].slice(-1) })),
  ];
  Plotly.animate("contour", { data: moved, traces: [0, ...paths, ...heads] }, QUICK);
  Plotly.animate("loss", {
    data: runs.map((r) => ({
      x: r.gaps.slice(0, k + 1).map((_, j) => j), y: lossValues(r).slice(0, k + 1),
    })),
    traces: runs.map((_, i) => i),
  }, QUICK);
  if (full3d) { // on the surface, points outside the window are left out (a gap), not drawn in the air
    const [[x0, x1], [y0, y1]] = page.result.landscape.window;
    const inside = runs.map((r) => r.points.slice(0, k + 1).map((p) => p[0] >= x0 && p[0] <= x1 && p[1] >= y0 && p[1] <= y1));
    const keep = (values, i) => values.map((v, j) => (inside[i][j] ? v : null));
    Plotly.restyle("surface", {
      x: xs.map(keep), y: ys.map(keep), z: runs.map((r, i) => keep(r.heights.slice(0, k + 1).map((h) => h + lift), i)),
    }, runs.map((_, i) => i + 1));
  }
  $("scrub").value = k;
  $("scrub-label").textContent = `step ${k}`;
}

const STILL = new URLSearchParams(location.search).get("animate") === "0"; // ?animate=0: no animation

function animate(longest) {
  cancelAnimationFrame(page.animation);
  if (STILL) {
    showUpTo(longest);
    document.body.dataset.status = "ready";
    return;
  }
  const duration = Math.min(1500, 6 * longest + 200);
  const begin = performance.now();
  let frame = 0;
  document.body.dataset.status = "animating";
  const tick = (now) => {
    const k = Math.min(longest, Math.round(((now - begin) / duration) * longest));
    showUpTo(k, k === longest || frame++ % 8 === 0);
    if (k < longest) page.animation = requestAnimationFrame(tick);
    else document.body.dataset.status = "ready";
  };
  page.animation = requestAnimationFrame(tick);
}

// ---- a saved landscape (descend.landscape(...).save("file.json")) -------------------------------
function openSaved(saved) {
  if (saved.format !== "descend.landscape") throw new Error("not a file written by descend.landscape(...).save()");
  page.savedMode = true;
  cancelAnimationFrame(page.animation);
  showMessage("");
  document.body.classList.add("saved");
  $("saved-banner").hidden = false;
  $("saved-title").textContent = `Saved landscape: ${saved.title || ""} (${saved.kind})`;
  const path = saved.path || [];
  if (saved.kind === "1d") {
    Plotly.purge("contour");
    Plotly.react("contour-base", [{ x: saved.x, y: saved.loss, mode: "lines", line: { color: "#1f77b4" } }], {
      margin: { l: 50, r: 10, t: 30, b: 40 }, title: { text: saved.title || "1-D slice", font: { size: 14 } },
      xaxis: { ...AXIS, title: { text: saved.xlabel || "t" } }, yaxis: { ...AXIS, title: { text: "loss" } },
    }, CONFIG);
    Plotly.purge("surface");
  } else {
    Plotly.purge("contour");
    Plotly.react("contour-base", [
      { type: "contour", x: saved.x, y: saved.y, z: saved.loss, colorscale: COLORSCALE, ncontours: 30, showscale: true,
        contours: { coloring: "fill" }, line: { width: 0.5 } },
      { x: path.map((p) => p[0]), y: path.map((p) => p[1]), mode: "lines+markers", line: { color: "#d62728" },
        marker: { size: 4 }, name: "trajectory" },
    ], {
      margin: { l: 50, r: 10, t: 30, b: 40 }, title: { text: saved.title || "loss landscape", font: { size: 14 } },
      xaxis: { ...AXIS, title: { text: saved.xlabel || "α" } }, yaxis: { ...AXIS, title: { text: saved.ylabel || "β" } },
      showlegend: false,
    }, CONFIG);
    Plotly.react("surface", [{ type: "surface", x: saved.x, y: saved.y, z: saved.loss, colorscale: COLORSCALE, showscale: false }], {
      margin: { l: 0, r: 0, t: 30, b: 0 }, title: { text: "drag to rotate", font: { size: 12 } },
      scene: { xaxis: { title: { text: saved.xlabel || "α" } }, yaxis: { title: { text: saved.ylabel || "β" } },
        zaxis: { title: { text: "loss" } } },
    }, CONFIG);
  }
  Plotly.purge("loss");
  $("legend-notes").textContent = "";
}

function closeSaved() {
  page.savedMode = false;
  document.body.classList.remove("saved");
  $("saved-banner").hidden = true;
  $("open-landscape").value = "";
  page.surface = null;
  changed();
}

// ---- exports ------------------------------------------------------------------------------------
function download(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function exportCsv() {
  const { body } = setupRequest();
  const response = await fetch("/api/csv", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  if (!response.ok) { showMessage((await response.json()).error); return; }
  download(await response.blob(), "descend-playground.csv");
}

// ---- wiring -------------------------------------------------------------------------------------
function wire() {
  $("landscape").addEventListener("change", () => {
    const info = page.catalog.landscapes[$("landscape").value];
    page.state.landscape = info.name;
    page.state.params = {};
    delete page.state.preset;
    page.state.start = [...info.start];
    buildAll();
    changed();
  });
  const number = (id, apply) => $(id).addEventListener("change", () => {
    const v = Number($(id).value);
    if ($(id).value.trim() !== "" && Number.isFinite(v)) { apply(v); changed(); }
  });
  number("start-x", (v) => { page.state.start[0] = v; });
  number("start-y", (v) => { page.state.start[1] = v; });
  number("steps", (v) => { page.state.steps = Math.round(v); });
  number("seed", (v) => { page.state.seed = Math.round(v); });
  $("add-run").addEventListener("click", async () => {
    const used = new Set(page.state.runs.map((r) => r.optimizer));
    const name = Object.keys(page.catalog.optimizers).find((n) => !used.has(n)) || "SGD";
    const run = { optimizer: name, hyperparameters: defaultsOf(name) };
    page.state.runs.push(run);
    document.body.dataset.status = "computing";
    $("add-run").disabled = true;
    try {
      await startingRate(run);
    } finally {
      buildRuns();
      changed();
    }
  });
  for (const name of Object.keys(PRESETS)) $("preset").add(new Option(name, name));
  $("preset").addEventListener("change", () => {
    const name = $("preset").value, preset = PRESETS[name];
    if (!preset) return;
    const { notice, claims, ...setup } = JSON.parse(JSON.stringify(preset));
    applyState({ ...setup, preset: name });
  });
  $("share").addEventListener("click", async () => {
    const url = shareUrl();
    try { await navigator.clipboard.writeText(url); $("share").textContent = "link copied"; } catch {
      window.prompt("Copy this link:", url);
    }
    setTimeout(() => { $("share").textContent = "copy link"; }, 1500);
  });
  const image = async (format) => {
    const which = $("export-figure").value, options = { format, filename: `descend-${which}`, width: 900, height: 700 };
    if (which !== "contour" || page.savedMode || !page.figure) {
      return Plotly.downloadImage(which === "contour" ? "contour-base" : which, options);
    }
    // the contours and the paths are two plots on screen: export them as one figure
    const scratch = document.createElement("div");
    scratch.style.cssText = "position:absolute;left:-10000px;width:900px;height:700px";
    document.body.appendChild(scratch);
    const full = page.figure.paths.map((trace, i) => (i < page.traces.pathIndex ? trace : { ...trace }));
    const { xs, ys } = pathsUpTo(Number($("scrub").value));
    page.result.runs.forEach((run, i) => {
      full[page.traces.pathIndex + i] = { ...full[page.traces.pathIndex + i], x: xs[i], y: ys[i] };
    });
    const legend = { showlegend: true, legend: { x: 0, y: 1, bgcolor: "rgba(255,255,255,0.85)", font: { size: 11 } } };
    await Plotly.newPlot(scratch, [...page.figure.contour, ...full.slice(0, page.traces.headIndex)],
      { ...page.figure.layout, ...legend });
    await Plotly.downloadImage(scratch, options);
    Plotly.purge(scratch);
    scratch.remove();
  };
  $("export-png").addEventListener("click", () => image("png"));
  $("export-svg").addEventListener("click", () => image("svg"));
  $("export-csv").addEventListener("click", exportCsv);
  $("open-landscape").addEventListener("change", () => {
    const file = $("open-landscape").files[0];
    if (!file) return;
    file.text().then((text) => openSaved(JSON.parse(text))).catch((error) => {
      showMessage(`Could not open ${file.name}: ${error.message}`);
      page.savedMode = false;
    });
  });
  $("close-saved").addEventListener("click", closeSaved);
  $("scrub").addEventListener("input", () => { cancelAnimationFrame(page.animation); showUpTo(Number($("scrub").value)); });
  $("play").addEventListener("click", () => page.result && animate(Number($("scrub").max)));
  // a click on the contour plot moves the start there (the exact point under the mouse)
  $("contour").addEventListener("mousemove", showReadout);
  $("contour").addEventListener("mouseleave", () => { $("readout").textContent = ""; });
  $("contour").addEventListener("click", (event) => {
    const plot = $("contour"), layout = plot._fullLayout, area = plot.querySelector(".nsewdrag");
    if (page.savedMode || !layout || !area) return;
    const box = area.getBoundingClientRect();
    const x = layout.xaxis.p2c(event.clientX - box.left), y = layout.yaxis.p2c(event.clientY - box.top);
    if (!Number.isFinite(x) || !Number.isFinite(y)) return;
    page.state.start = [Number(x.toFixed(3)), Number(y.toFixed(3))];
    $("start-x").value = format(page.state.start[0]);
    $("start-y").value = format(page.state.start[1]);
    changed();
  });
}

// the value under the mouse, read from the grid the server computed (the paths' plot covers the contours)
function showReadout(event) {
  const plot = $("contour"), layout = plot._fullLayout, area = plot.querySelector(".nsewdrag");
  if (page.savedMode || !layout || !area || !page.surface) return;
  const box = area.getBoundingClientRect();
  const x = layout.xaxis.p2c(event.clientX - box.left), y = layout.yaxis.p2c(event.clientY - box.top);
  const grid = page.surface.data, nearest = (axis, v) => {
    const step = (axis[axis.length - 1] - axis[0]) / (axis.length - 1);
    return Math.round((v - axis[0]) / step);
  };
  const i = nearest(grid.x, x), j = nearest(grid.y, y);
  const inside = i >= 0 && j >= 0 && i < grid.x.length && j < grid.y.length;
  const zLabel = page.result?.landscape.log_scale ? "log₁₀(1 + f − f*)" : "f";
  $("readout").textContent = inside && grid.height[j][i] !== null
    ? `x = ${format(x)}, y = ${format(y)}, ${zLabel} ≈ ${format(grid.height[j][i])}` : "";
}

async function init() {
  const response = await fetch("/api/catalog");
  page.catalog = await response.json();
  for (const [name, info] of Object.entries(page.catalog.landscapes)) $("landscape").add(new Option(info.title, name));
  wire();
  const linked = stateFromUrl();
  try {
    applyState(linked || defaultState());
  } catch (error) {
    showMessage(`The link's setup could not be used (${error.message}); showing the default one.`);
    applyState(defaultState());
  }
}

init().catch((error) => {
  showMessage(`The page could not start: ${error.message}`);
  document.body.dataset.status = "error";
});
