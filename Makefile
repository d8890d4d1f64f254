# Every target runs inside .venv, created from requirements.lock when missing or stale.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := $(wildcard packages/*)
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench bench-quick clean

venv: $(STAMP)

$(STAMP): requirements.lock $(wildcard packages/*/pyproject.toml)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-virtualenv -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat $(foreach p,$(PACKAGES),-e $(p))
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --directory demo_checkpoints

test: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy packages/*/src
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-quick: $(STAMP)
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) demo_checkpoints
