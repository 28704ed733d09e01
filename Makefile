# Two commands on a fresh machine: `make train` and `make test` (the fast tier); `make test-all` is what CI runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Two workers: most tests are single-threaded XLA compiles.
PYTEST_ARGS ?= -n 2 --durations=15
# The fast tier: unit and parity tests on small inputs; tests marked `slow` (training runs, multi-process,
# soak, notebooks, the clean-venv install, the docs build) run only in `make test-all`.
FAST   := -m "not slow"

.PHONY: train test test-all venv clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.train-installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[train]'
	touch $@

$(VENV)/.test-installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install --quiet '$(TORCH)'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.train-installed

venv: $(VENV)/.test-installed

train: $(VENV)/.train-installed
	$(PY) -m train.main --config=train/configs/digits.py --workdir=$(or $(WORKDIR),runs/digits)

test: $(VENV)/.test-installed
	$(PY) -m pytest $(FAST) $(PYTEST_ARGS)

test-all: $(VENV)/.test-installed
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
