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

.PHONY: setup data browser demo tour test test-slow lint bench clean constraints

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,hf]'
	touch $(STAMP)

# after an upgrade that passes `make test`: pin what the .venv now holds
constraints: setup
	{ grep '^#' constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

SHARED_TEXT ?= ../shared/data/text/tiny_shakespeare.txt

data:
	@if [ -f $(SHARED_TEXT) ] && [ ! -f data/tiny_shakespeare.txt ]; then mkdir -p data && cp $(SHARED_TEXT) data/tiny_shakespeare.txt; fi
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

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: setup data
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench: setup data
	$(BIN)/dl1 bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .torch_home build *.egg-info
