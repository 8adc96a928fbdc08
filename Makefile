# Two commands (see README.md):
#   make run [PROFILE=paper|quick|smoke]   set up .venv, run every notebook with papermill
#   make test                              set up .venv, run the test suite (offline)
# EXTRAS=ray (make setup/test/run EXTRAS=ray) also installs the optional Ray extra; its tests skip without it.
PROFILE ?= paper
EXTRAS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)$(if $(EXTRAS),-$(EXTRAS))

.PHONY: setup run test bench bench-ray app clean-outputs check-clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a different build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	$(if $(EXTRAS),$(PY) -m pip install -q -e ".[$(EXTRAS)]")
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(PY) scripts/run_notebooks.py --profile $(PROFILE)

# The test suite (tests/) includes a papermill run of the whole notebook series in the smoke profile, into
# $(NB_RUN); nbval then re-executes those executed copies and checks that the cells marked
# NBVAL_CHECK_OUTPUT reproduce. Tables and figures of both passes stay under $(NB_RUN).
NB_RUN := runs/test-smoke
NB_ENV := SNA_RESULTS_DIR=$(CURDIR)/$(NB_RUN)/results SNA_FIGURES_DIR=$(CURDIR)/$(NB_RUN)/figures

test: $(STAMP)
	SNA_TEST_RUN_DIR=$(CURDIR)/$(NB_RUN) $(PY) -m pytest
	$(NB_ENV) $(PY) -m pytest -p no:cacheprovider --nbval-lax \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg $(NB_RUN)/0*.ipynb

bench: $(STAMP)
	$(PY) scripts/benchmark_sweep.py

bench-ray:
	$(MAKE) setup EXTRAS=ray
	$(PY) scripts/benchmark_ray.py

app: $(STAMP)
	$(VENV)/bin/streamlit run app/sna_demo.py

# Strip outputs from the committed notebooks (they must never carry random-weight numbers).
clean-outputs: $(STAMP)
	$(PY) scripts/run_notebooks.py --strip

# Fail if a committed notebook carries outputs or execution counts (also checked by tests/test_notebooks.py).
check-clean: $(STAMP)
	$(PY) scripts/run_notebooks.py --check-clean
