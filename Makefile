# Two commands are all a new user needs: `make demo` and `make test`.
# Only Python 3.11 and make are assumed; everything else is installed into .venv from the
# pinned requirements.lock.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint format lock clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: $(VENV)/.installed  ## set up and run the demo campaign end to end
	$(BIN)/abm demo

test: $(VENV)/.installed  ## set up, lint and run the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: $(BIN)/python  ## re-resolve every dependency and pin it in requirements.lock
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	( echo "# Every dependency, pinned. Regenerate with: make lock"; \
	  $(VENV)-lock/bin/pip freeze --all --exclude-editable | grep -v -E '^(pip|abm-orchestrator)==' ) > requirements.lock
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) .abm .pytest_cache
