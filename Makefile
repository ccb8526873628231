# Two commands do all the set-up on a fresh machine:
#   make demo   install into .venv, then run the whole pipeline on generated audio
#   make test   install into .venv, then lint (ruff, import contracts) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo lint test bench clean

setup: $(VENV)/.installed

# torch 2.13.0 first: it is a CPU build on local disk here; an open "torch" requirement
# resolved by pip on its own could pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/siamese-audio demo

lint: setup
	BIN=$(BIN) bash .ci/lint

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf $(VENV) demo-output
