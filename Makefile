# The two commands of the README:
#   make run    set up .venv, then run the whole chain on the default profile
#   make test   set up .venv, then run the test suite
# Other targets: make smoke, make lab, make setup, make clean-runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROFILE ?= default
ARGS   ?=

.PHONY: setup run smoke test lab clean-runs

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps torchattacks==3.5.1   # its metadata wants torchvision and a CUDA torch
	$(PY) -m ipykernel install --sys-prefix --name lwta-study --display-name "Python (lwta-study)"
	touch $@

run: setup
	$(PY) -m lwta_utils.pipeline --profile $(PROFILE) $(ARGS)

smoke: setup
	$(PY) -m lwta_utils.pipeline --profile smoke $(ARGS)

test: setup
	$(PY) -m pytest

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

clean-runs:
	rm -rf runs/
