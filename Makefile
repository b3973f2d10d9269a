# `make lab` runs the main job, `make test` the test suite; each sets up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup lab test bench soak clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[lab,dev,playground]"
	touch $@

lab: setup
	$(VENV)/bin/descend lab --out report

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/step_speed.py --output benchmarks/RESULTS.md

soak: setup
	$(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
