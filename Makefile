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

.PHONY: run test test-fast bench bench-large bench-grid study soak fuzz clean

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

# against native llama-bench when it is installed (LLAMA_BENCH=/path or on PATH), else llama-cpp-python & co
bench: $(STAMP)
	@if [ -n "$$LLAMA_BENCH" ] || command -v llama-bench >/dev/null; then \
		$(BIN)/python benchmarks/vs_llama_bench.py -p 512 -n 128 && \
		$(BIN)/python benchmarks/vs_llama_bench.py -p 0 -n 64 -d 4000; \
	else $(BIN)/python benchmarks/speed.py; fi

# the seeds' shapes (random weights; the first run writes them: ~25 GB under ~/.cache/llamalab/synth)
bench-large: $(STAMP)
	$(BIN)/python benchmarks/vs_llama_bench.py -p 128 -n 32 -m synth:llama-3.2-1b:q4_k_m -m synth:llama-3.2-1b:q8_0 \
		-m synth:llama-3.2-1b:f16 -m synth:llama-3.2-3b:q4_k_m
	$(BIN)/python benchmarks/vs_llama_bench.py -p 0 -n 32 -m synth:llama-3-8b:q4_k_m

# issue 12's whole grid against native llama-bench and llama2.c (LLAMA_BENCH, LLAMA2C): one table and chart
# under docs/bench/grid-DATE-TIME/ (~45 min; writes the bench-large files on first use)
bench-grid: $(STAMP)
	$(BIN)/python benchmarks/grid.py

study: $(STAMP)
	$(BIN)/python benchmarks/study.py

soak: $(STAMP)
	$(BIN)/python scripts/soak.py --minutes 2

fuzz: $(STAMP)
	$(BIN)/python scripts/fuzz.py --cases 10000 --target all

clean:
	rm -rf $(VENV) build *.egg-info
