# `make lab` runs the main job, `make test` the test suite; each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup lab test report-check bench soak clean

setup: $(VENV)/.installed

# A fresh machine: about 2½ minutes, most of it downloading torch (2 min 35 s measured on a 2-core machine).
$(VENV)/.installed: pyproject.toml
	@echo "setup: creating $(VENV) and installing, in three steps (about 2-3 minutes on a fresh machine):"
	@echo "setup:   1. torch 2.13.0 (the largest download)"
	@echo "setup:   2. descend, editable, with its lab, dev and playground extras (matplotlib, scikit-learn, scipy, tqdm,"
	@echo "setup:      mnist1d, plotly, mlxtend, pytest, hypothesis, playwright, starlette, uvicorn, ...)"
	@echo "setup:   3. Chromium for the report's browser check, with apt where this user may (skipped otherwise)"
	@date +%s > .setup-started
	$(PYTHON) -m venv $(VENV)
	@echo "setup: [1/3] torch 2.13.0 ..."
	$(PY) -m pip install --quiet --progress-bar off torch==2.13.0
	@echo "setup: [2/3] descend and its extras ..."
	$(PY) -m pip install --quiet --progress-bar off -e ".[lab,dev,playground]"
	@# the peers the tests compare against, without their own torch requirement (torch stays 2.13.0)
	$(PY) -m pip install --quiet --progress-bar off --no-deps torchao==0.18.0 schedulefree==1.4.1
	@echo "setup: [3/3] Chromium ..."
	@# The report's browser check needs Chromium: install it where we may (root, apt), never fail without it.
	@if command -v chromium >/dev/null 2>&1; then echo "setup: Chromium is already installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)) || \
		echo "setup: could not install chromium; the browser check of the lab report will be skipped"; \
	else echo "setup: no Chromium and no apt as root: the browser check of the lab report will be skipped"; fi
	@echo "setup: done in $$(( $$(date +%s) - $$(cat .setup-started) )) s"; rm -f .setup-started
	touch $@

# The main job: every claim of the course, 10 seeds each; about 1½-2 minutes on 2 free cores (see README).
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
	rm -rf $(VENV) .pytest_cache .hypothesis .setup-started
