# The two commands of the README:
#   make run    set up .venv, then run the whole chain on the default profile
#   make test   set up .venv, then run the test suite
# Other targets: make smoke, make lab, make setup, make browser, make clean-runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
ARGS   ?=

.PHONY: setup run smoke test test-header lab clean-runs browser

setup: $(VENV)/.installed $(VENV)/.warm

# --no-compile: byte-compiling all ~14,000 files of the environment took 60 of pip's 100 s on 2 cores;
# the next step byte-compiles the third of them that the study imports
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install --no-compile -e ".[test]"
	$(PY) -m pip install --no-compile --no-deps torchattacks==3.5.1   # its metadata wants torchvision and a CUDA torch
	$(PY) -m ipykernel install --sys-prefix --name lwta-study --display-name "Python (lwta-study)"
	touch $@

# Write the bytecode of the modules a run imports and compile the numba kernels (LWTA, k-WTA) into numba's disk
# cache (about 35 s on 2 cores, once; again when a kernel file changes), so that no run starts by
# compiling them (lwta_utils/pipeline/warm.py)
$(VENV)/.warm: $(VENV)/.installed lwta_utils/defenses/lwta_kernels.py lwta_utils/defenses/kwta.py lwta_utils/pipeline/warm.py
	$(PY) -m lwta_utils.pipeline.warm
	touch $@

run: setup
	$(PY) -m lwta_utils.pipeline --profile $(PROFILE) $(ARGS)

smoke: setup
	$(PY) -m lwta_utils.pipeline --profile smoke $(ARGS)

# Headless Chromium for the report check (Debian's chromium + chromium-driver): installed when
# missing and we are root; otherwise a note, and the browser test is skipped outside `make test`.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: install Debian's chromium and chromium-driver for the report check (tests/test_report.py)"; fi

test: test-header
	@$(MAKE) --no-print-directory -j2 setup browser   # apt's chromium (when missing) beside pip's install
	@LWTA_REQUIRE_BROWSER=$$(command -v chromedriver >/dev/null && echo 1 || echo 0) $(PY) -m pytest

test-header:
	@echo "make test: sets up $(VENV) when missing (pip, the package registry only), installs Debian's chromium and"
	@echo "chromium-driver with apt when they are missing and this runs as root (the report's browser check), then"
	@echo "runs the test suite with pytest, one worker per core (about 7.5 minutes on 2 CPU cores)."

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
