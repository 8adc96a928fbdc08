# Two commands (see README.md):
#   make run [PROFILE=paper|quick|smoke]   set up .venv, run every notebook with papermill
#   make test                              set up .venv, run the test suite (offline)
PROFILE ?= paper
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: setup run test bench app clean-outputs check-clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a different build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(PY) scripts/run_notebooks.py --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) scripts/benchmark_sweep.py

app: $(STAMP)
	$(VENV)/bin/streamlit run app/sna_demo.py

# Strip outputs from the committed notebooks (they must never carry random-weight numbers).
clean-outputs: $(STAMP)
	$(PY) scripts/run_notebooks.py --strip
