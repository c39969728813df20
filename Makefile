# The book's commands. `make help` lists them.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
export PYTHONPATH := $(CURDIR)

.PHONY: help setup tangle check chapter execute book html pdf verify test test-unit test-notebooks bench cold clean

help:  ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 18

setup: $(VENV)/.installed  ## create .venv with everything the book and the tests need

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

tangle:  ## write llm/ from the chapters' exported cells
	$(PY) -m bookbuild tangle

check:  ## fail with a diff when llm/ and the chapters disagree
	$(PY) -m bookbuild check

chapter: tangle  ## execute one chapter: make chapter CH=chapters/01-tokens.qmd
	$(PY) -m bookbuild execute --force $(CH)

execute: tangle  ## execute every chapter whose freeze is stale
	$(PY) -m bookbuild execute

book: tangle  ## build the website, the PDF and the EPUB into _book/
	$(PY) -m bookbuild book
	$(PY) -m bookbuild verify

html: tangle  ## build only the website
	$(PY) -m bookbuild book --format html

pdf: tangle  ## build only the PDF
	$(PY) -m bookbuild book --format pdf

test: check test-unit test-notebooks  ## everything CI runs: check, pytest, nbval, a render of the book
	$(PY) -m bookbuild book --renderer embedded
	$(PY) -m bookbuild verify --browser  # also headless Chromium at 1280 and 390 px; screenshots in _book/screenshots/

test-unit:  ## pytest for llm/ and the build tools
	$(PY) -m pytest -q tests

test-notebooks:  ## nbval: re-run every chapter and compare with its frozen outputs
	$(PY) -m pytest -q $(NBVAL) _notebooks

bench: $(VENV)/.bench-installed book  ## install the references, build the book (the playground is measured in it), run every benchmark
	@failed=; for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "benchmarks that failed:$$failed"; exit 1; fi

# --no-deps and --ignore-requires-python: requirements-bench.txt says why; the import proves nothing is missing
$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python -r requirements-bench.txt
	$(PY) -c "import llms_from_scratch.ch04, llms_from_scratch.kv_cache.gpt2, llms_from_scratch.kv_cache.generate"
	touch $@

cold:  ## rebuild from nothing: forget frozen outputs and cached runs, then build
	rm -rf _notebooks _cache _book
	$(MAKE) book

clean:  ## remove the built book (keeps frozen outputs and caches)
	rm -rf _book
