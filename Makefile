# `make lab` runs the main job, `make test` the test suite; each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup lab test report-check bench soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[lab,dev,playground]"
	@# the peers the tests compare against, without their own torch requirement (torch stays 2.13.0)
	$(PY) -m pip install --quiet --no-deps torchao==0.18.0 schedulefree==1.4.1
	@# The report's browser check needs Chromium: install it where we may (root, apt), never fail without it.
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
		echo "setup: could not install chromium; the browser check of the lab report will be skipped"; \
	fi
	touch $@

lab: setup
	$(VENV)/bin/descend lab --out report

test: setup
	$(PY) -m pytest -q

# The lab report in headless Chromium, offline (also part of `make test`; skips where Chromium is absent).
report-check: setup
	$(PY) -m pytest -q tests/test_report_browser.py

bench: setup
	$(PY) benchmarks/step_speed.py --output benchmarks/RESULTS.md

soak: setup
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
