# Two commands on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU build of torch lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Two workers: most tests are single-threaded XLA compiles (about 9 minutes on 2 cores).
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: train test venv clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
