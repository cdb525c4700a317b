# esper_lab: two commands set everything up on a fresh machine.
#   make run   creates .venv, installs, starts the dashboard on 127.0.0.1:8501 training the default preset
#   make test  creates .venv if needed, installs, runs the whole suite (unit, notebooks under nbval, dashboard, browser)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lab install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip install -q -e '.[dev,ray]'
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip install -q -e '.[bench]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/esper-lab dashboard --train demo

test: $(STAMP)
	ESPER_LAB_NB_SIZE=ci GLIBC_TUNABLES=$$($(BIN)/python -m esper_lab.malloc) $(BIN)/python -m pytest -q

lab: $(STAMP)
	GLIBC_TUNABLES=$$($(BIN)/python -m esper_lab.malloc) $(BIN)/jupyter lab --no-browser --ip 127.0.0.1 notebooks/

clean:
	rm -rf $(VENV) *.egg-info
