# The two quick-start commands: `make demo` (the main job: dl1 tour) and `make test` (the test suite).
# Both set up what they need, idempotently: a .venv in the repo with the package at the exact versions of
# constraints.txt (pyproject.toml states ranges), and Fashion-MNIST through Debian's dataset-fashion-mnist where apt
# is available.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.dl1-installed
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg
export TORCH_HOME ?= $(CURDIR)/.torch_home

.PHONY: setup data browser demo tour test test-slow test-slurm slurm lint bench clean constraints

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,hf,docs]'
	touch $(STAMP)

# after an upgrade that passes `make test`: pin what the .venv now holds
constraints: setup
	{ grep '^#' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

# tiny Shakespeare ships inside the package (src/dl1/data/corpora/): nothing to fetch for the GPT part
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte ]; then \
	  echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q dataset-fashion-mnist >/dev/null || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null); \
	else \
	  echo "NOTE: no apt (or not root): put Fashion-MNIST's four IDX files in data/FashionMNIST/raw/ (see README)"; \
	fi

browser:
	@command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); } || \
	  echo "NOTE: chromium not installed; the browser test of the tour report will be skipped"

demo: setup data
	$(BIN)/dl1 tour $(TOUR_ARGS)

tour: demo

# everything the suite needs (under CI=true a test whose data or browser is missing fails, naming `make test`)
test: setup data browser
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

# the SLURM tests start a one-node cluster; they install Debian's SLURM and munge when missing (root + apt)
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	    (apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null || (apt-get update -q >/dev/null && \
	     apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null)); } || \
	  echo "NOTE: no apt (or not root): the SLURM tests will be skipped"

test-slurm: setup slurm
	$(BIN)/python -m pytest -q -rs -m slurm $(PYTEST_ARGS)

test-slow: setup data
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup data
	$(BIN)/dl1 bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .torch_home build *.egg-info

# the documentation site (mkdocs.yml, docs/): `make docs` builds it into site/ with --strict (a broken link or a
# missing page fails), `make docs-serve` serves it at http://127.0.0.1:8000 while you edit, `make docs-figures`
# re-makes the site's figures from one real run of the default tour (minutes on 2 cores) into docs/figures/tour/
.PHONY: docs docs-serve docs-figures

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

docs-figures: setup data
	$(BIN)/python docs/make_figures.py
