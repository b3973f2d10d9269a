"""How fast the playground answers a new setup, and how fast ``descend.landscape`` evaluates a grid.

    python benchmarks/playground_speed.py [--repeats 5] [--threads 2] [--browser] [--no-landscape]

Targets (issue 13): a new setup of 4 optimizers × 500 steps in <= 300 ms on 2 CPU cores; a 41×41
filter-normalized surface of the digits MLP in <= 30 s.  For each setup it reports the median over
``--repeats`` of: the trajectories alone (``api.trajectory`` ×4), the whole ``api.run_setup`` with
the contour grid of the new landscape, and the HTTP round trip to a live server (JSON included).
``--browser`` adds the time from changing the setup in the page (headless Chromium, no animation)
until the new figure is drawn.  Timings on a shared machine are noisy: compare medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request

import torch

from descend.playground import api
from descend.playground.server import Running

SETUPS = {
    "quadratic: SGD, momentum EMA, Nesterov, Adam": ("quadratic", [
        ("SGD", {"lr": 0.5}), ("SGD momentum (EMA form)", {"lr": 0.5, "momentum": 0.9}),
        ("Nesterov (reformulated)", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.1})]),
    "rosenbrock: SGD, momentum velocity, Adagrad, RMSprop": ("rosenbrock", [
        ("SGD", {"lr": 1e-3}), ("SGD momentum (velocity form)", {"lr": 1e-3, "momentum": 0.9}),
        ("Adagrad", {"lr": 0.1}), ("RMSprop", {"lr": 0.01})]),
    "convex-hull: SGD ×2, Adam, Adafactor": ("convex-hull", [
        ("SGD", {"lr": 0.05}), ("SGD momentum (EMA form)", {"lr": 0.05}), ("Adam", {"lr": 0.05}),
        ("Adafactor", {})]),
    "beale: SGD, Adam, AdamW, SAM (SGD)": ("beale", [
        ("SGD", {"lr": 0.01}), ("Adam", {"lr": 0.05}), ("AdamW", {"lr": 0.05}), ("SAM (SGD)", {"lr": 0.01})]),
}
STEPS = 500


def median_ms(function, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process, in ms.  On a machine shared with other
    work the CPU time is the better estimate of the wall time the same call takes on idle cores."""
    wall, cpu = [], []
    for _ in range(repeats):
        begin, begin_cpu = time.perf_counter(), time.process_time()
        function()
        wall.append(1000 * (time.perf_counter() - begin))
        cpu.append(1000 * (time.process_time() - begin_cpu))
    return statistics.median(wall), statistics.median(cpu)


def setup_of(landscape: str, runs) -> dict:
    return {"landscape": landscape, "steps": STEPS, "surface": True,
            "runs": [{"optimizer": name, "hyperparameters": h} for name, h in runs]}


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(url + "api/run", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def browser_times(url: str, repeats: int) -> dict[str, float]:
    """Milliseconds from a setup change in the page to the drawn figure, per setup (median)."""
    from playwright.sync_api import sync_playwright

    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.goto(url + "?animate=0")
        page.wait_for_function("document.body.dataset.status === 'ready'", timeout=120_000)
        for title, (landscape, runs) in SETUPS.items():
            state = {"landscape": landscape, "params": {}, "start": api.make_landscape(landscape).start,
                     "steps": STEPS, "seed": 0, "runs": [{"optimizer": n, "hyperparameters": h} for n, h in runs]}
            times = []
            for repeat in range(repeats):
                state["seed"] = repeat  # a new setup each time (and a new landscape the first time)
                times.append(page.evaluate("""async (state) => {
                    const begin = performance.now();
                    page.surface = null; applyState(state);
                    await new Promise((done) => { const poll = () => (document.body.dataset.status === 'ready'
                        ? done() : setTimeout(poll, 2)); setTimeout(poll, 45); });
                    return performance.now() - begin - 40; }""", state))  # 40 ms: the page's input debounce
            results[title] = statistics.median(times)
        browser.close()
    return results


def landscape_seconds() -> float:
    import descend
    from descend.lab import data

    torch.manual_seed(0)
    split = data.digits(0)
    model = data.mlp(64, 128, 10, depth=2)
    optimizer = descend.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(split.x_train), split.y_train).backward()
        optimizer.step()
    begin, begin_cpu = time.perf_counter(), time.process_time()
    descend.landscape(model, torch.nn.functional.cross_entropy, (split.x_train, split.y_train), steps=41)
    return time.perf_counter() - begin, time.process_time() - begin_cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    parser.add_argument("--no-landscape", action="store_true", help="skip the 41×41 digits-MLP landscape")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {STEPS} steps per optimizer, "
          f"median of {args.repeats}\n")
    with Running() as url:
        for landscape, runs in SETUPS.values():  # warm up: kernels, imports, the catalog
            post(url, setup_of(landscape, runs))
        print("| setup (4 optimizers × 500 steps) | trajectories: wall (CPU) | run_setup + grid: wall (CPU) "
              "| HTTP round trip: wall |")
        print("|---|---:|---:|---:|")
        for title, (landscape, runs) in SETUPS.items():
            made = api.make_landscape(landscape)
            paths = median_ms(lambda: [api.trajectory(made, n, h, steps=STEPS) for n, h in runs], args.repeats)
            whole = median_ms(lambda: api.run_setup(setup_of(landscape, runs)), args.repeats)
            http = median_ms(lambda: post(url, setup_of(landscape, runs)), args.repeats)[0]
            print(f"| {title} | {paths[0]:.0f} ms ({paths[1]:.0f} ms) | {whole[0]:.0f} ms ({whole[1]:.0f} ms) "
                  f"| {http:.0f} ms |", flush=True)
        if args.browser:
            print("\n| setup | page: change → drawn (headless Chromium, software WebGL) |\n|---|---:|")
            for title, ms in browser_times(url, args.repeats).items():
                print(f"| {title} | {ms:.0f} ms |")
    if not args.no_landscape:
        wall, cpu = landscape_seconds()
        print(f"\ndescend.landscape, 41×41 filter-normalized grid, digits MLP 64-128-128-10 on 1347 samples: "
              f"{wall:.1f} s wall, {cpu:.1f} s CPU over {args.threads} threads")


if __name__ == "__main__":
    main()
