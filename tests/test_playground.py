"""descend playground: the API the page calls, the server in front of it, and the page in headless Chromium."""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import descend
from descend.__main__ import main
from descend.playground import api
from descend.playground.landscapes import LANDSCAPES, make_landscape
from descend.playground.server import Running

CHROMIUM = "/usr/bin/chromium"


# --- landscapes -------------------------------------------------------------------------------


def landscape_points(landscape):
    (x0, x1), (y0, y1) = landscape.window
    rng = np.random.default_rng(0)
    return [(float(x), float(y)) for x, y in zip(rng.uniform(x0, x1, 6), rng.uniform(y0, y1, 6))]


@pytest.mark.parametrize("name", list(LANDSCAPES))
def test_each_landscape_gradient_matches_finite_differences(name):
    for params in ({}, {"condition": 300.0, "angle": 70.0} if name == "quadratic" else {}):
        landscape = make_landscape(name, params)
        for x, y in landscape_points(landscape):
            h = 1e-6
            numeric = ((landscape.value(x + h, y) - landscape.value(x - h, y)) / (2 * h),
                       (landscape.value(x, y + h) - landscape.value(x, y - h)) / (2 * h))
            exact = landscape.gradient(x, y)
            scale = 1 + abs(exact[0]) + abs(exact[1])
            assert abs(float(exact[0]) - numeric[0]) < 1e-6 * scale, (x, y)
            assert abs(float(exact[1]) - numeric[1]) < 1e-6 * scale, (x, y)


@pytest.mark.parametrize("name", list(LANDSCAPES))
def test_each_landscape_has_its_stated_minima(name):
    landscape = make_landscape(name)
    for point in landscape.minima_points():
        assert np.hypot(*landscape.gradient(*point)) < 1e-5
        assert float(landscape.value(*point)) == pytest.approx(landscape.minimum_value(), abs=1e-9)
    grid = api.surface(landscape, resolution=41)
    values = [h for row in grid["height"] for h in row]
    assert min(values) >= (0 if landscape.log_scale else landscape.minimum_value()) - 1e-9


def test_convex_hull_minibatch_gradients_are_unbiased_and_full_batch_is_exact():
    hull = make_landscape("convex-hull", {"batch": 1})
    x, y = 0.7, -1.3
    per_sample = [hull._mean_gradient(x, y, [i]) for i in range(5)]
    assert np.allclose(np.mean(per_sample, axis=0), hull.gradient(x, y))
    full = make_landscape("convex-hull", {"batch": 5})
    assert full.sampled_gradient(x, y, full.sample(random.Random(0))) == pytest.approx(full.gradient(x, y))
    # the minimizer lies in the hull of the per-sample minimizers (seed 002, Fig. 4.2)
    assert np.hypot(*hull.gradient(*hull.minimizer)) < 1e-12


def test_bad_landscape_parameters_are_refused():
    with pytest.raises(ValueError, match="condition must lie in"):
        make_landscape("quadratic", {"condition": 0.5})
    with pytest.raises(ValueError, match="unknown landscape"):
        make_landscape("volcano")
    with pytest.raises(ValueError, match="whole number"):
        make_landscape("convex-hull", {"batch": 2.5})


# --- the optimizers on offer ------------------------------------------------------------------


def test_catalog_lists_every_public_optimizer_class_and_the_named_variants():
    catalog = api.optimizer_catalog()
    public = [n for n in descend.__all__ if isinstance(getattr(descend, n), type)
              and issubclass(getattr(descend, n), descend.ChainOptimizer) and n != "ChainOptimizer"]
    # a landscape's θ is one dense vector: no class for sparse gradients, matrices only, or marked groups
    not_offered = {n for n in public if getattr(descend, n).sparse_gradients or getattr(descend, n).matrices_only}
    assert not_offered == {"SparseAdam", "Muon"} and api.NOT_ON_A_LANDSCAPE == {"MuonWithAuxAdamW"}
    not_offered |= api.NOT_ON_A_LANDSCAPE
    assert set(public) - not_offered <= set(catalog)
    assert not not_offered & set(catalog)
    for variant in ("SGD momentum (EMA form)", "SGD momentum (velocity form)", "Nesterov (reformulated)",
                    "Nesterov (look-ahead)", "Adam (no bias correction)", "SAM (SGD)", "Adafactor"):
        assert variant in catalog
    sliders = {h["name"]: h for h in catalog["Adam"]["hyperparameters"]}
    assert sliders["lr"]["scale"] == "log" and sliders["betas[1]"]["scale"] == "decay"
    assert sliders["betas[1]"]["default"] == 0.999 and sliders["bias_correction"]["scale"] == "bool"


def test_a_new_public_optimizer_class_appears_without_code_changes(monkeypatch):
    class Lionish(descend.SGD):
        def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                     weight_decay: float = 0.0, strange: float = 3.0, *, nonfinite: str = "raise"):
            super().__init__(params, lr=lr, weight_decay=weight_decay, nonfinite=nonfinite)

    monkeypatch.setattr(descend, "Lionish", Lionish, raising=False)
    monkeypatch.setattr(descend, "__all__", [*descend.__all__, "Lionish"])
    api.optimizer_catalog.cache_clear()
    try:
        entry = api.optimizer_catalog()["Lionish"]
    finally:
        monkeypatch.undo()
        api.optimizer_catalog.cache_clear()
    sliders = {h["name"]: h for h in entry["hyperparameters"]}
    assert set(sliders) == {"lr", "betas[0]", "betas[1]", "weight_decay", "strange"}
    assert sliders["strange"]["scale"] == "log" and sliders["strange"]["low"] < 3.0 < sliders["strange"]["high"]


def direct_run(make_optimizer, landscape, start, steps):
    """What a user writing their own loop gets: θ.grad = ∇f(θ), optimizer.step()."""
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    optimizer = make_optimizer([theta])
    if callable(getattr(optimizer, "train", None)):  # schedule-free optimizers step in train mode
        optimizer.train()
    for _ in range(steps):
        if isinstance(optimizer, descend.SAM):
            def closure():
                theta.grad = torch.tensor(landscape.gradient(*theta.tolist()), dtype=torch.float64)
                return landscape.value(*theta.tolist())

            optimizer.step(closure)
        else:
            theta.grad = torch.tensor(landscape.gradient(*theta.tolist()), dtype=torch.float64)
            optimizer.step()
    return theta.tolist()


DIRECT = [
    ("SGD", {"lr": 0.02}, lambda p: descend.SGD(p, lr=0.02)),
    ("SGD momentum (EMA form)", {"lr": 0.05, "momentum": 0.8},
     lambda p: descend.SGD(p, lr=0.05, momentum=0.8, dampening=0.8)),
    ("SGD momentum (velocity form)", {"lr": 0.01, "momentum": 0.9},
     lambda p: descend.SGD(p, lr=0.01, momentum=0.9)),
    ("Nesterov (reformulated)", {"lr": 0.01, "momentum": 0.9},
     lambda p: descend.SGD(p, lr=0.01, momentum=0.9, nesterov=True)),
    ("Nesterov (look-ahead)", {"lr": 0.05, "momentum": 0.7},
     lambda p: descend.SGD(p, lr=0.05, momentum=0.7, dampening=0.7, nesterov=True)),
    ("Adam", {"lr": 0.05, "betas[1]": 0.99}, lambda p: descend.Adam(p, lr=0.05, betas=(0.9, 0.99))),
    ("Adam (no bias correction)", {"lr": 0.05}, lambda p: descend.Adam(p, lr=0.05, bias_correction=False)),
    ("Adafactor", {"beta1": 0.9}, lambda p: descend.Adafactor(p, beta1=0.9)),
    ("SAM (SGD)", {"lr": 0.01, "rho": 0.1}, lambda p: descend.SAM(p, descend.SGD, rho=0.1, lr=0.01)),
]


@pytest.mark.parametrize("name, hyperparameters, make", DIRECT, ids=[d[0] for d in DIRECT])
def test_trajectory_ends_where_the_optimizer_class_used_directly_ends(name, hyperparameters, make):
    landscape = make_landscape("himmelblau")
    run = api.trajectory(landscape, name, hyperparameters, start=(-0.5, -0.5), steps=60)
    assert run.diverged_at is None and len(run.points) == 61
    assert run.points[-1] == direct_run(make, landscape, (-0.5, -0.5), 60)
    assert run.losses[-1] == landscape.value(*run.points[-1])


@pytest.mark.parametrize("name", [n for n in api.public_optimizer_classes() if n != "SAM"])
def test_every_public_class_with_its_defaults_matches_direct_use(name):
    landscape = make_landscape("quadratic")
    cls = api.public_optimizer_classes()[name]
    run = api.trajectory(landscape, name, {}, start=(1.0, -2.0), steps=25)
    assert run.points[-1] == direct_run(lambda p: cls(p, **api.STARTS.get(name, {})), landscape, (1.0, -2.0), 25)


def test_stochastic_trajectories_repeat_with_the_seed_and_differ_across_seeds():
    hull = make_landscape("convex-hull", {"batch": 1, "noise": 0.5})
    first = api.trajectory(hull, "SGD", {"lr": 0.05}, steps=50, seed=1)
    assert api.trajectory(hull, "SGD", {"lr": 0.05}, steps=50, seed=1).points == first.points
    assert api.trajectory(hull, "SGD", {"lr": 0.05}, steps=50, seed=2).points != first.points


def test_a_diverging_trajectory_is_cut_at_the_first_non_finite_value():
    landscape = make_landscape("rosenbrock")
    run = api.trajectory(landscape, "SGD", {"lr": 0.05}, start=(-1.2, 1.0), steps=500)
    assert run.diverged_at is not None and len(run.points) == run.diverged_at == len(run.losses)
    assert all(math.isfinite(v) for point in run.points for v in point)
    # the optimizer used directly reaches a non-finite point (or gradient) there
    def finite(function, x, y):
        try:
            return all(math.isfinite(v) for v in np.atleast_1d(function(x, y)))
        except OverflowError:
            return False

    theta = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    optimizer = descend.SGD([theta], lr=0.05)
    k = 0
    while finite(landscape.value, *theta.tolist()):
        k += 1
        if not finite(landscape.gradient, *theta.tolist()):
            break
        theta.grad = torch.tensor(landscape.gradient(*theta.tolist()), dtype=torch.float64)
        optimizer.step()
    assert k == run.diverged_at


def test_a_hyperparameter_out_of_range_gets_the_optimizers_own_message():
    with pytest.raises(ValueError) as own:
        descend.Adam([torch.zeros(2, requires_grad=True)], betas=(0.9, 1.5))
    setup = {"landscape": "beale", "runs": [{"optimizer": "SGD", "hyperparameters": {"lr": 0.01}},
                                             {"optimizer": "Adam", "hyperparameters": {"betas[1]": 1.5}}]}
    with pytest.raises(api.SetupError) as refused:
        api.run_setup(setup)
    assert str(refused.value) == str(own.value) and refused.value.run == 1
    with pytest.raises(api.SetupError, match="unknown hyperparameter"):
        api.run_setup({"runs": [{"optimizer": "SGD", "hyperparameters": {"beta": 1}}]})
    with pytest.raises(api.SetupError, match="start must be"):
        api.run_setup({"start": [0, float("nan")], "runs": [{"optimizer": "SGD"}]})


def test_run_setup_answers_what_the_page_draws():
    answer = api.run_setup({"landscape": "convex-hull", "landscape_params": {"batch": 2}, "steps": 30,
                            "runs": [{"optimizer": "SGD", "hyperparameters": {"lr": 0.1}, "batch": 5},
                                     {"optimizer": "SGD", "hyperparameters": {"lr": 0.1}}]})
    full, sampled = answer["runs"]
    assert full["points"] == api.trajectory(make_landscape("convex-hull", {"batch": 5}), "SGD", {"lr": 0.1},
                                            steps=30).points
    assert sampled["points"] != full["points"]
    assert len(answer["surface"]["x"]) == len(answer["surface"]["height"][0])
    assert answer["landscape"]["hull"] and len(full["heights"]) == len(full["points"]) == 31


# --- the server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    with Running() as url:
        yield url


def request(url, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_server_serves_the_page_plotly_and_the_api(server):
    status, page = request(server)
    assert status == 200 and b"/plotly.min.js" in page and b"cdn" not in page.lower()
    status, script = request(server + "plotly.min.js")
    assert status == 200 and len(script) > 1_000_000 and b"plotly" in script[:2000].lower()
    status, app = request(server + "static/app.js")
    assert status == 200 and b"/api/run" in app
    status, catalog = request(server + "api/catalog")
    assert status == 200 and "Adam" in json.loads(catalog)["optimizers"]
    setup = {"landscape": "quadratic", "steps": 20, "runs": [{"optimizer": "Adam", "hyperparameters": {"lr": 0.1}}]}
    status, answer = request(server + "api/run", setup)
    run = json.loads(answer)["runs"][0]
    assert status == 200 and run["points"] == api.trajectory("quadratic", "Adam", {"lr": 0.1}, steps=20).points
    status, table = request(server + "api/csv", setup)
    lines = table.decode().splitlines()
    assert status == 200 and lines[0] == "optimizer,step,x,y,loss,diverged_at" and len(lines) == 22


def test_server_answers_bad_input_with_400_and_the_message(server):
    status, answer = request(server + "api/run", {"runs": [{"optimizer": "SGD", "hyperparameters": {"lr": -1}}]})
    assert status == 400 and json.loads(answer) == {"error": "SGD: lr must be a finite number >= 0, got -1", "run": 0}
    status, answer = request(server + "api/run", b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(answer)["error"]


HUGE = 10**400  # an integer no float can hold: float(HUGE) raises OverflowError


@pytest.mark.parametrize("setup, where", [
    ({"runs": [{"optimizer": "SGD", "hyperparameters": {"lr": HUGE}}]}, "runs[0].hyperparameters.lr"),
    ({"start": [HUGE, 1], "runs": [{"optimizer": "SGD"}]}, "start[0]"),
    ({"landscape": "quadratic", "landscape_params": {"condition": -HUGE}, "runs": []}, "landscape_params.condition"),
    ({"steps": HUGE, "runs": [{"optimizer": "SGD"}]}, "steps"),
])
def test_a_number_too_large_for_a_float_is_refused_with_its_place(setup, where):
    with pytest.raises(api.SetupError) as refused:
        api.run_setup(setup)
    assert str(refused.value).startswith(f"{where}: ") and "too large" in str(refused.value)
    assert refused.value.run == (0 if where.startswith("runs[") else None)


def test_every_checkbox_and_slider_end_of_the_catalog_runs_or_is_refused_with_a_message():
    """The page offers these controls: none of them may end in anything but a trajectory or a message."""
    for name, entry in api.optimizer_catalog().items():
        for slider in entry["hyperparameters"]:
            values = [True, False] if slider["scale"] == "bool" else [slider["low"], slider["high"]]
            for value in values:
                try:
                    api.run_setup({"steps": 3, "surface": False,
                                   "runs": [{"optimizer": name, "hyperparameters": {slider["name"]: value}}]})
                except api.SetupError:
                    pass  # a value the optimizer refuses, with its own message


def random_json(rng, depth=0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 3, 5000, 5001, 2**63, HUGE, -HUGE])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e-300, 1e308, float("inf"), float("-inf"), float("nan")])
    if kind == 4:
        return rng.choice(["", "x", "SGD", "quadratic", "lr", "[0]"])
    if kind == 5:
        return []
    if kind == 6:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["x", "lr", "batch", "condition", "optimizer", "hyperparameters", "runs", "start", "steps"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(3))}


def test_any_json_value_anywhere_in_a_setup_gives_an_answer_or_a_setup_error():
    """A fuzz test of what the server hands to run_setup: an answer in strict JSON, or a SetupError."""
    rng = random.Random(0)
    names = list(api.optimizer_catalog())
    for _ in range(300):
        run = {"optimizer": rng.choice(names) if rng.random() < 0.8 else random_json(rng)}
        entry = api.optimizer_catalog().get(run["optimizer"]) if isinstance(run["optimizer"], str) else None
        if entry and rng.random() < 0.8:
            run["hyperparameters"] = {rng.choice(entry["hyperparameters"])["name"]: random_json(rng)}
        elif rng.random() < 0.3:
            run["hyperparameters"] = random_json(rng)
        if rng.random() < 0.2:
            run["batch"] = random_json(rng)
        setup = {"landscape": rng.choice([*LANDSCAPES, None]), "steps": 3, "surface": False,
                 "runs": [run] if rng.random() < 0.9 else random_json(rng)}
        for key in ("landscape_params", "start", "seed", "steps"):
            if rng.random() < 0.3:
                setup[key] = random_json(rng)
        if setup["landscape"] is not None and rng.random() < 0.5:
            knobs = list(make_landscape(setup["landscape"]).params) or ["x"]
            setup["landscape_params"] = {rng.choice(knobs): random_json(rng)}
        if isinstance(setup.get("steps"), int) and not 0 <= setup["steps"] <= 5:
            setup["steps"] = 3  # the fuzz is about values, not about waiting for 5000 steps
        try:
            json.dumps(api.run_setup(setup), allow_nan=False)  # the server answers in strict JSON
        except api.SetupError:
            pass


def raw_request(server, head: bytes, body: bytes = b"", timeout: float = 30.0) -> tuple[int, bytes]:
    """Sends ``head`` (request line and headers) and ``body`` over a socket; the status and body of the answer."""
    host, port = server.split("//")[1].rstrip("/").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
                next((line.split(b":")[1] for line in answer.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")), b"0")):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_of_answer, _, content = answer.partition(b"\r\n\r\n")
    return int(head_of_answer.split(b" ")[1]), content


@pytest.mark.parametrize("body", [b"[1]", b"null", b"\"setup\"", b"3"])
@pytest.mark.parametrize("route", ["api/run", "api/csv"])
def test_a_body_that_is_not_a_json_object_is_a_400_with_a_message(server, route, body):
    status, answer = request(server + route, body)
    assert status == 400 and json.loads(answer)["error"] == "the setup must be a JSON object"


@pytest.mark.parametrize("body, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nested"),
    (b'{"runs": [{"optimizer": "SGD", "hyperparameters": {"lr": ' + b"9" * 400 + b"}}]}", "too large"),
    (b'{"runs": [{"optimizer": "SGD", "hyperparameters": {"lr": ' + b"9" * 5000 + b"}}]}", "too large"),
    (b'{"start": [1e400, 0], "runs": [{"optimizer": "SGD"}]}', "start must be two finite numbers"),
])
@pytest.mark.parametrize("route", ["api/run", "api/csv"])
def test_nesting_and_numbers_no_setup_can_use_are_a_400_with_a_message(server, route, body, message):
    status, answer = request(server + route, body)
    assert status == 400 and message in json.loads(answer)["error"]


def test_a_body_past_the_limit_is_refused_with_413_before_it_is_read(server):
    from descend.playground.server import MAX_BODY_BYTES

    assert MAX_BODY_BYTES == 1_000_000
    # 30 MB announced and none of it sent: a server that read the body would wait for it until the timeout
    head = (b"POST /api/run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 30000000\r\n")
    status, answer = raw_request(server, head, timeout=20)
    assert status == 413 and "1000000 bytes" in json.loads(answer)["error"]
    # chunked, no length announced: the server stops reading once the body passes the limit
    chunk = b'"' + b"x" * 65_534 + b'"'
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))  # 1.3 MB of a never-ending body
    head = (b"POST /api/csv HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n")
    status, answer = raw_request(server, head, chunks, timeout=20)
    assert status == 413 and "1000000 bytes" in json.loads(answer)["error"]
    # a small chunked body is read and answered as usual
    setup = json.dumps({"steps": 2, "runs": [{"optimizer": "SGD"}]}).encode()
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(setup), setup)
    status, answer = raw_request(server, head, body)
    assert status == 200 and answer.decode().splitlines()[0].startswith("optimizer,step")
    status, answer = request(server + "api/run", b"x" * 1_000_001)  # with its length: refused as well
    assert status == 413


def test_server_refuses_requests_from_other_origins_and_hosts(server):
    assert request(server + "api/catalog", headers={"Origin": "http://evil.example"})[0] == 403
    assert request(server + "api/catalog", headers={"Host": "evil.example"})[0] == 403
    assert request(server + "api/catalog", headers={"Origin": "http://localhost:1234"})[0] == 200
    assert request(server + "api/catalog", headers={"Host": "[::1]:80"})[0] == 200


def test_opening_the_server_with_host_lets_that_host_in():
    with Running(opened_to="192.0.2.7") as url:
        assert request(url + "api/catalog", headers={"Host": "192.0.2.7:8000"})[0] == 200
        assert request(url + "api/catalog", headers={"Host": "198.51.100.1"})[0] == 403


def test_a_port_in_use_gives_a_one_line_error_and_exit_status_2(capfd):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        status = main(["playground", "--port", str(taken.getsockname()[1]), "--no-browser"])
    finally:
        taken.close()
    error = capfd.readouterr().err
    assert status == 2 and error.count("\n") == 1 and "is in use" in error


def test_a_non_loopback_host_is_warned_about_and_an_address_not_here_is_a_one_line_error(capfd):
    status = main(["playground", "--host", "192.0.2.1", "--no-browser"])  # TEST-NET-1: never this machine's
    error = capfd.readouterr().err.splitlines()
    assert status == 2 and len(error) == 2
    assert "warning: --host 192.0.2.1 lets other machines" in error[0]
    assert error[1].startswith("descend: error: cannot listen on 192.0.2.1")


def test_static_files_ship_with_the_package():
    config = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    assert "static/*" in config["tool"]["setuptools"]["package-data"]["descend.playground"]
    assert "playground" in config["project"]["optional-dependencies"]
    static = Path(api.__file__).parent / "static"
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static.iterdir()}


# --- the page, in headless Chromium ---------------------------------------------------------------


def browser_or_skip():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM}: the end-to-end page test needs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: the end-to-end page test needs it (pip install playwright)")
    return sync_playwright


def test_page_end_to_end_in_headless_chromium(server):
    sync_playwright = browser_or_skip()
    problems = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        page = browser.new_page(viewport={"width": 1400, "height": 950})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        def settled():
            page.wait_for_timeout(100)
            page.wait_for_function("['ready', 'error'].includes(document.body.dataset.status)", timeout=90_000)

        def endpoint(run):
            return page.evaluate(f"window.playground.result.runs[{run}].points.at(-1)")

        page.goto(server + "?animate=0")  # the animation is for people; the test wants the final frame
        settled()
        # pick two optimizers
        page.locator(".run[data-index='0'] select.optimizer").select_option("SGD momentum (EMA form)")
        settled()
        page.locator(".run[data-index='1'] select.optimizer").select_option("Adam")
        settled()
        assert page.evaluate("window.playground.result.runs.map(r => r.optimizer)") == [
            "SGD momentum (EMA form)", "Adam"]
        state = page.evaluate("window.playground.state")
        before = endpoint(0)
        # move the lr slider of the first optimizer: the trajectory changes, and is the API's trajectory
        slider = page.locator(".run[data-index='0'] input[type=range][data-name='lr']")
        slider.focus()
        for _ in range(40):
            slider.press("ArrowLeft")
        settled()
        after = endpoint(0)
        lr = page.evaluate("window.playground.state.runs[0].hyperparameters.lr")
        assert after != before and lr < state["runs"][0]["hyperparameters"]["lr"]
        run = api.trajectory("quadratic", "SGD momentum (EMA form)", {"lr": lr, "momentum": 0.9},
                             start=state["start"], steps=state["steps"])
        assert after == run.points[-1]
        # the URL holds the whole setup: opening it elsewhere restores it
        shared = page.url
        second = browser.new_page()
        second.on("pageerror", lambda e: problems.append(str(e)))
        second.goto(shared)
        second.wait_for_function("document.body.dataset.status === 'ready'", timeout=90_000)
        assert second.evaluate("window.playground.result.runs[0].points.at(-1)") == after
        second.close()
        # export: the figure as SVG, the numbers as CSV
        with page.expect_download(timeout=90_000) as svg:
            page.click("#export-svg")
        assert svg.value.suggested_filename == "descend-contour.svg"
        assert Path(svg.value.path()).read_text().startswith("<svg")
        with page.expect_download(timeout=90_000) as table:
            page.click("#export-csv")
        rows = Path(table.value.path()).read_text().splitlines()
        assert rows[0].startswith("optimizer,step,x,y,loss") and len(rows) == 1 + 2 * (state["steps"] + 1)
        # a click on the contour plot moves the start
        box = page.locator("#contour .nsewdrag").bounding_box()
        page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + 0.25 * box["height"])
        settled()
        start = page.evaluate("window.playground.result.runs[0].points[0]")
        assert start[0] > 0.5 and start[1] > 0.5
        assert problems == []
        # an out-of-range value typed in shows the optimizer's own message (the browser itself logs
        # the 400 answer as a failed resource: the only console error allowed)
        box = page.locator(".run[data-index='1'] input[type=number][data-name='lr']")
        box.fill("-3")
        box.press("Enter")
        settled()
        assert "Adam: lr must be a finite number >= 0, got -3" in page.inner_text("#message")
        browser.close()
    assert all("status of 400" in problem for problem in problems), problems


# --- the page's helpers (static/format.js) under Node, against their Python twins --------------------------

NODE = shutil.which("node")
FORMAT_JS = Path(api.__file__).parent / "static" / "format.js"


def run_node(script: str):
    if NODE is None:
        pytest.skip("Node.js is not installed: the page's helpers are tested in Chromium only")
    program = f"const f = require({json.dumps(str(FORMAT_JS))});\nconsole.log(JSON.stringify((() => {{ {script} }})()));"
    done = subprocess.run([NODE, "-e", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


NUMBERS = [0, 1e-6, 2.5e-7, 3.31e-4, 0.00099999, 0.0123, 1.1, 545, 12345.6, 99999, 123456, 1.2e10, -4e-4, -0.5,
           9.02e-16, 1e-300]


def test_the_page_writes_numbers_as_the_report_does_and_never_as_zeros():
    from descend.lab.report import number_text

    shown = run_node(f"return {json.dumps(NUMBERS)}.map((v) => f.formatNumber(v));")
    assert shown == [number_text(v) for v in NUMBERS]
    assert shown[1] == "1e-6" and shown[2] == "2.5e-7" and shown[9] == "1e5"
    assert run_node("return [f.formatNumber(null), f.formatNumber(Infinity), f.formatNumber(0.000001, 4)];") == [
        "", "inf", "1e-6"]


def test_a_setup_link_reads_the_same_in_python_and_in_the_page():
    from descend.playground.links import decode_setup, encode_setup

    setup = {"landscape": "quadratic", "params": {"condition": 20.0, "span": 2.0}, "start": [-5.0, -2.0],
             "steps": 100, "seed": 0, "preset": "β ∈ {0, 0.5}: ε → 1e-6",
             "runs": [{"optimizer": "SGD momentum (EMA form)", "hyperparameters": {"lr": 1e-6, "momentum": 0.9}}]}
    from_python = encode_setup(setup)
    decoded, from_page = run_node(f"const s = {json.dumps(setup)}; "
                                  f"return [f.decodeState({json.dumps(from_python)}), f.encodeState(s)];")
    assert decoded == setup and decode_setup(from_page) == setup


def test_a_run_past_1e10_is_cut_there_as_diverged():
    runs = run_node("""
        const run = {points: [[1, 1], [-30, 40], [1e9, -2e9], [3e10, 1], [1e300, 1]], losses: [1, 2, 3, 4, 5],
                     gaps: [1, 2, 3, 4, 5], heights: [0, 1, 2, 3, 4], diverged_at: null};
        const loud = {...run, points: [[1, 1], [2, 2], [3, 3]], losses: [1, 2e11, 3], gaps: [1, 2, 3], heights: [1, 2, 3]};
        const fine = {...run, points: [[1, 1], [2, 2]], losses: [1, 2], gaps: [1, 2], heights: [1, 2]};
        return [f.cutDivergence(run), f.cutDivergence(loud), f.cutDivergence(fine), f.cutDivergence({...fine, diverged_at: 2})];
    """)
    cut, loud, fine, finite_cut = runs
    assert cut["diverged_at"] == 3 and len(cut["points"]) == len(cut["losses"]) == len(cut["heights"]) == 3
    assert cut["diverged_reason"] == "passed 1e10"
    assert loud["diverged_at"] == 1 and loud["points"] == [[1, 1]]  # the loss passing 1e10 counts too
    assert fine["diverged_at"] is None and fine["diverged_reason"] is None and len(fine["points"]) == 2
    assert finite_cut["diverged_reason"] == "not finite"  # the server's own cut keeps its reason


def test_the_starting_rate_is_the_lowest_ending_run_that_stays_and_moves():
    chosen = run_node("""
        const window = [[-1, 1], [-1, 1]];
        const run = (points, loss, diverged_at = null) => ({points, losses: points.map(() => loss), diverged_at});
        const runs = [run([[0, 0], [0.001, 0]], 0.1),          // barely moves
                      run([[0, 0], [0.5, 0.5]], 0.3),          // moves, ends at 0.3
                      run([[0, 0], [0.5, -0.5]], 0.2),         // moves, ends lower: the one
                      run([[0, 0], [3, 0]], 0.0),              // leaves the window
                      run([[0, 0], [0.2, 0]], 0.0, 1)];        // diverged
        return [f.chooseRate([1, 2, 3, 4, 5], runs, window),
                f.chooseRate([1], [run([[0, 0], [0, 0]], 1)], window)];
    """)
    assert chosen == [3, None]


def test_the_page_and_the_report_give_each_optimizer_one_colour():
    from descend.lab import style

    script = (Path(api.__file__).parent / "static" / "app.js").read_text()
    table = re.search(r"const OPTIMIZER_COLORS = \{(.*?)\};", script, re.S).group(1)
    colours = dict(re.findall(r'"([^"]+)": "(#[0-9a-f]{6})"', table))
    assert colours == {name: colour for name, colour in style.KNOWN.items() if name != "GD"}  # GD: no page entry


# --- the presets, the cards and the numbers in headless Chromium -----------------------------------------------


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory) -> Path:
    """A stand-in lab report: an index.html with every claim's anchor, listed in its marker as the lab does."""
    from descend.lab import CLAIMS

    folder = tmp_path_factory.mktemp("served-report")
    anchors = "".join(f'<div id="claim-{cid}">{cid}</div>' for cid in CLAIMS)
    (folder / "index.html").write_text(f"<!doctype html><title>lab report</title><body>{anchors}</body>")
    (folder / ".descend-report").write_text(json.dumps({"written_by": "descend lab", "files": ["index.html"]}))
    return folder


@pytest.fixture(scope="module")
def playground(report_folder):
    """One Chromium on a playground that serves ``report_folder`` at /report/; ``open()`` gives a fresh page."""
    sync_playwright = browser_or_skip()
    with Running(report=report_folder) as url, sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
        problems: list[str] = []

        class Opener:
            base = url
            errors = problems

            @staticmethod
            def open(hash_: str = ""):
                page = chromium.new_page(viewport={"width": 1400, "height": 950})
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(url + "?animate=0" + hash_)
                settle(page)
                return page

        yield Opener
        chromium.close()


def settle(page):
    page.wait_for_timeout(100)
    page.wait_for_function("['ready', 'error'].includes(document.body.dataset.status)", timeout=90_000)


def choose_preset(page, name: str):
    page.locator("#preset").select_option(name)
    settle(page)
    assert page.evaluate("document.body.dataset.status") == "ready", page.inner_text("#message")


def sentences(text: str) -> int:
    return len([s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", text.strip()) if s])


def test_every_preset_says_what_to_notice_and_links_its_claims(playground):
    from descend.lab import CLAIMS

    page = playground.open()
    names = page.evaluate("Object.keys(PRESETS)")
    assert len(names) == 7
    for name in names:
        choose_preset(page, name)
        notice = page.locator("#notice")
        assert notice.is_visible() and notice.locator("h2").inner_text().lower() == "what to notice"
        text = notice.locator("p").first.inner_text()
        assert 2 <= sentences(text) <= 3, (name, text)
        links = notice.locator("a").all()
        assert links, name
        for link in links:
            claim_id = link.inner_text()
            assert claim_id in CLAIMS, f"{name}: {claim_id} is no claim of the lab"
            assert link.get_attribute("href") == f"/report/index.html#claim-{claim_id}"
        # the preset's name travels in the link, so a student opening it sees the note too
        assert playground_state(page)["preset"] == name
        runs = page.evaluate("window.playground.result.runs.length")
        assert runs == len(page.evaluate(f"PRESETS[{json.dumps(name)}].runs"))
    # a shared link restores the note; changing the landscape lets it go
    again = playground.open("#" + page.url.split("#", 1)[1])
    assert again.locator("#notice").is_visible() and again.locator("#preset").input_value() == names[-1]
    again.locator("#landscape").select_option("beale")
    settle(again)
    assert not again.locator("#notice").is_visible()
    # a claim link opens the claim in the report the playground serves
    choose_preset(page, names[0])
    with page.context.expect_page() as opened:
        page.locator("#notice a").first.click()
    report = opened.value
    report.wait_for_load_state()
    claim_id = page.locator("#notice a").first.inner_text()
    assert report.url.endswith(f"/report/index.html#claim-{claim_id}") and report.locator(f"#claim-{claim_id}").count() == 1
    for tab in (page, again, report):
        tab.close()
    assert playground.errors == []


def playground_state(page) -> dict:
    from descend.playground.links import setup_from_url

    return setup_from_url(page.url)


def preset_result(page, name: str) -> tuple[dict, dict]:
    setup = page.evaluate(f"PRESETS[{json.dumps(name)}]")
    answer = api.run_setup({"landscape": setup["landscape"], "landscape_params": setup["params"],
                            "start": setup["start"], "steps": setup["steps"], "seed": setup["seed"],
                            "runs": setup["runs"], "surface": False})
    return setup, answer


def first_index(values, condition) -> int | None:
    found = [k for k, v in enumerate(values) if condition(v)]
    return found[0] if found else None


def test_the_presets_show_what_their_claims_say(playground):
    """The three presets the issue found contradicting their claims, and the numbers their notes quote."""
    page = playground.open()
    # the zigzag: plain SGD flips θ₂'s sign every step, momentum at the same α damps it and arrives sooner
    setup, answer = preset_result(page, "Zigzag vs momentum (ill-conditioned quadratic)")
    plain, ball = (np.array(run["points"]) for run in answer["runs"])
    assert all(plain[k, 1] * plain[k + 1, 1] < 0 for k in range(15))  # a zigzag across the valley
    across = [float(np.abs(np.diff(p[:, 1])).sum()) for p in (plain, ball)]  # distance travelled across the valley
    assert across[1] < 0.6 * across[0]  # averaged out: half the back and forth
    arrive = [first_index(np.linalg.norm(p, axis=1), lambda d: d < 0.01) for p in (plain, ball)]
    assert arrive[1] < arrive[0]
    notice = page.evaluate("PRESETS['Zigzag vs momentum (ill-conditioned quadratic)'].notice")
    assert f"{arrive[1]} steps to within 0.01 of the minimum instead of {arrive[0]}" in notice
    # the saddle: at the same α Adam is off the saddle first; SGD at a 4× larger α catches up
    setup, answer = preset_result(page, "Escaping a saddle")
    escape = [first_index(np.abs(np.array(run["points"])[:, 1]), lambda y: y > 1) for run in answer["runs"]]
    assert setup["runs"][0]["optimizer"] == "Adam" and escape[0] < escape[1]
    notice = page.evaluate("PRESETS['Escaping a saddle'].notice")
    assert f"by step {escape[0]}" in notice and f"{escape[1]} steps" in notice and f"off in {escape[2]}" in notice
    # bias correction: the uncorrected first step is (1−β₁)/√(1−β₂) = 3.2 α per coordinate, and what ends lowest
    # is corrected Adam at a larger α
    setup, answer = preset_result(page, "Adam with and without bias correction")
    first_steps = [np.abs(np.subtract(run["points"][1], run["points"][0])) for run in answer["runs"]]
    assert first_steps[1] / first_steps[0] == pytest.approx([0.1 / math.sqrt(0.001)] * 2, rel=1e-3)
    finals = [run["gaps"][-1] for run in answer["runs"]]
    assert finals[2] < finals[1] < finals[0]
    # the others' numbers
    setup, answer = preset_result(page, "Nesterov: look-ahead with α/(1−β) retraces the reformulated form")
    heavy, reformulated, look_ahead = (np.array(run["points"]) for run in answer["runs"])
    assert np.allclose(reformulated, look_ahead, atol=1e-9)
    arrive = [first_index(np.linalg.norm(p, axis=1), lambda d: d < 0.01) for p in (heavy, reformulated)]
    assert f"needs {arrive[0]} steps to within 0.01 of the minimum, Nesterov {arrive[1]}" in page.evaluate(
        "PRESETS['Nesterov: look-ahead with α/(1−β) retraces the reformulated form'].notice")
    setup, answer = preset_result(page, "Momentum β ∈ {0, 0.5, 0.9}, α = 0.001/(1−β), on Rosenbrock (Fig. 4.1)")
    distances = [f"{np.linalg.norm(np.subtract(run['points'][-1], 1)):.2g}" for run in answer["runs"]]
    notice = page.evaluate("PRESETS['Momentum β ∈ {0, 0.5, 0.9}, α = 0.001/(1−β), on Rosenbrock (Fig. 4.1)'].notice")
    assert all(d in notice for d in distances), (distances, notice)
    setup, answer = preset_result(page, "Learning rate: too low / just right / too high")
    low, right, high = answer["runs"]
    assert right["gaps"][-1] < 1e-4 < low["gaps"][-1] < low["gaps"][0] < high["gaps"][-1]
    notice = page.evaluate("PRESETS['Learning rate: too low / just right / too high'].notice")
    assert f"fallen by a factor {round(low['gaps'][0] / low['gaps'][-1])}" in notice
    (x0, x1), (y0, y1) = answer["landscape"]["window"]
    assert not (x0 <= high["points"][-1][0] <= x1 and y0 <= high["points"][-1][1] <= y1)  # it left the window
    page.close()


def test_cards_keep_torch_plumbing_under_advanced(playground):
    page = playground.open()
    page.locator(".run[data-index='1'] select.optimizer").select_option("RMSprop")
    settle(page)
    card = page.locator(".run[data-index='1']")
    # torch's plumbing (differentiable, capturable, state_dtype, max_grad_norm) is not in the catalog: no control
    for name in ("differentiable", "capturable", "state_dtype", "max_grad_norm"):
        assert card.locator(f"[data-name='{name}']").count() == 0, name
    # the algorithm's own options stay in view, small values as 1e-8
    assert card.locator("input[type=checkbox][data-name='centered']").is_visible()
    assert card.locator("input[type=number][data-name='eps']").input_value() == "1e-8"
    box = card.locator("input[type=number][data-name='lr']")
    box.fill("0.000001")
    box.press("Enter")
    settle(page)
    assert "lr=1e-6" in page.locator("#loss").inner_text()
    page.close()
    assert playground.errors == []


def test_an_added_optimizer_starts_at_a_rate_that_moves(playground):
    page = playground.open()
    page.locator("#landscape").select_option("rosenbrock")
    settle(page)
    page.locator(".run[data-index='1'] button").click()  # keep SGD only
    settle(page)
    page.locator("#add-run").click()
    settle(page)
    state = page.evaluate("window.playground.state")
    added = state["runs"][1]
    default = api.optimizer_catalog()[added["optimizer"]]["hyperparameters"][0]
    assert default["name"] == "lr"
    rates = page.evaluate("PROBE_RATES")
    # the rate Python finds the same way: the lowest final loss among runs that stay in the window and move
    probe = api.run_setup({"landscape": "rosenbrock", "landscape_params": state["params"], "start": state["start"],
                           "steps": min(state["steps"], 500), "surface": False,
                           "runs": [{"optimizer": added["optimizer"], "hyperparameters": {**added["hyperparameters"],
                                                                                          "lr": lr}} for lr in rates]})
    (x0, x1), (y0, y1) = probe["landscape"]["window"]
    size = math.hypot(x1 - x0, y1 - y0)
    kept = [(run["losses"][-1], lr) for run, lr in zip(probe["runs"], rates)
            if run["diverged_at"] is None and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in run["points"])
            and math.dist(run["points"][0], run["points"][-1]) >= 0.02 * size]
    assert added["hyperparameters"]["lr"] == min(kept)[1]
    path = page.evaluate("window.playground.result.runs[1].points")
    assert math.dist(path[0], path[-1]) > 0.05 * size  # it moves on the surface
    assert "chosen when this optimizer was added" in page.locator(".run[data-index='1'] .chosen-rate").inner_text()
    assert "note" not in playground_state(page)["runs"][1]  # the link carries the setup, not the page's notes
    page.close()
    assert playground.errors == []


def test_a_run_past_1e10_is_shown_as_diverged(playground):
    page = playground.open()
    box = page.locator(".run[data-index='0'] input[type=number][data-name='lr']")
    box.fill("2.5")  # SGD on the quadratic: |1 − 2.5| = 1.5 per step, finite for hundreds of steps
    box.press("Enter")
    settle(page)
    state = page.evaluate("window.playground.state")
    run = api.trajectory(make_landscape("quadratic", state["params"]), "SGD", {"lr": 2.5}, start=state["start"],
                         steps=state["steps"])
    assert run.diverged_at is None  # the server sees finite numbers all the way
    past = first_index(range(len(run.points)), lambda k: max(map(abs, run.points[k])) > 1e10 or abs(run.losses[k]) > 1e10)
    shown = page.evaluate("window.playground.result.runs[0]")
    assert shown["diverged_at"] == past and len(shown["points"]) == past
    assert f"diverged: the loss or the parameters passed 1e10 in size at step {past}" in page.inner_text("#legend-notes")
    assert page.locator(".run[data-index='0'] .status").inner_text() == f"diverged at step {past}"
    page.close()
    assert playground.errors == []


def test_the_note_says_when_the_setup_has_moved_away_from_its_preset(playground):
    page = playground.open()
    choose_preset(page, "Escaping a saddle")
    assert page.locator("#notice h2").inner_text().lower() == "what to notice"
    box = page.locator(".run[data-index='0'] input[type=number][data-name='lr']")
    box.fill("0.2")
    box.press("Enter")
    settle(page)
    assert "as it was" in page.locator("#notice h2").inner_text().lower()
    box.fill("0.05")  # back to the preset's value
    box.press("Enter")
    settle(page)
    assert page.locator("#notice h2").inner_text().lower() == "what to notice"
    page.close()
    assert playground.errors == []
