# Two commands do all set-up on a fresh machine (Python 3.10+):
#   make run    -> venv + install + fetch the default model + generate
#   make test   -> venv + install (+ Debian chromium for the browser test, best effort) + the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= The capital of France is
# the prompt reaches the command as one argument, never as shell text: `make run PROMPT='$HOME "x" `id`'`
# runs on exactly those characters ($(value) keeps make from expanding $ in it; the recipe quotes it)
override PROMPT := $(value PROMPT)
export PROMPT
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench study soak fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/llamalab run -- "$$PROMPT"

test: $(STAMP)
	VENV=$(VENV) bash scripts/install-browser.sh
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py

study: $(STAMP)
	$(BIN)/python benchmarks/study.py

soak: $(STAMP)
	$(BIN)/python scripts/soak.py --minutes 2

fuzz: $(STAMP)
	$(BIN)/python scripts/fuzz.py --cases 10000 --target all

clean:
	rm -rf $(VENV) build *.egg-info
