# Two commands do all set-up on a fresh machine (both create .venv at the repository root):
#   make demo   install, get the data, run the main job on the embedded default
#   make test   install, run the test suite
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
# torch and torchvision are pinned together in one install so that pip never swaps in another
# torch build (a lone `pip install timm` would pull a multi-GB CUDA torch of a different version).
TORCH := torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
export HF_HUB_OFFLINE := 1

.PHONY: install data postgres browser demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[all,dev]" $(TORCH)
	touch $@

install: $(VENV)/.installed

data: $(FASHION_MNIST)

$(FASHION_MNIST):
	@SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist

# PostgreSQL server binaries for the store tests (a throwaway server on 127.0.0.1, infra/).
postgres:
	@test -n "$(wildcard /usr/lib/postgresql/*/bin/initdb)" || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql; }

# Headless Chromium for the dashboard's browser test (tests/dashboard/test_browser.py).
browser:
	@test -x /usr/bin/chromium || { SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

demo: install data
	$(VENV)/bin/flexiq demo

# The throwaway PostgreSQL server is stopped afterwards when this run started it (a given
# FLEXIQ_TEST_POSTGRES_URL, or a server already running, is left alone).
test: install data postgres browser
	@if [ -n "$${FLEXIQ_TEST_POSTGRES_URL:-}" ]; then $(VENV)/bin/pytest -q; else \
	  infra/postgres-test-server.sh status || trap 'infra/postgres-test-server.sh stop' EXIT; \
	  url=$$(infra/postgres-test-server.sh) && FLEXIQ_TEST_POSTGRES_URL="$$url" $(VENV)/bin/pytest -q; fi

clean:
	rm -rf $(VENV) build *.egg-info
