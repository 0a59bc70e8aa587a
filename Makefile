# `make demo` and `make test` work on a fresh machine: they create .venv and install into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch 2.13.0 sits in /opt/wheels on the project machines; elsewhere pip uses PyPI.
PIP_FLAGS ?= $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: demo test lint layers install clean browser display peers-venv

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q $(PIP_FLAGS) -e '.[test,export,tensorboard,napari-test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/segnet demo --out demo_output

# benchmarks/peers.py's MONAI U-Net trains inside segnet's recipe, so it needs segnet and MONAI in one
# environment: this one, never .venv (no peer is a dependency of segnet). nnU-Net gets its own
# (peers.py --install-nnunet).
PEERS_VENV := .venv-peers
$(PEERS_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q --upgrade pip
	$(PEERS_VENV)/bin/pip install -q $(PIP_FLAGS) -e . monai
	touch $@

peers-venv: $(PEERS_VENV)/.installed

# The report test renders report.html in Debian's headless Chromium; install it when missing
# (it skips with a reason where that is impossible, e.g. without root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	  echo "chromium could not be installed: the browser test of the report will be skipped"

# The napari plugin's tests render napari's OpenGL canvas on a virtual X display (Xvfb, started
# by pytest-xvfb); Qt 6's xcb platform needs these X libraries. Installed when missing, as chromium is.
XVFB_PACKAGES := xvfb libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libgl1-mesa-dri
display:
	@command -v Xvfb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(XVFB_PACKAGES) >/dev/null) ; } || \
	  echo "Xvfb could not be installed: the napari plugin's tests will be skipped"

# ruff (lint and format) and the import layers of pyproject.toml ([tool.importlinter]).
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks tools docs
	$(BIN)/ruff format --check src tests benchmarks tools docs
	$(BIN)/lint-imports

# Which stage imports which, counted in the code, beside the layers the contract allows.
layers: $(VENV)/.installed
	$(BIN)/python tools/import_layers.py

# The suite's own time is printed last; `pytest -m "not slow"` skips the tests that train or start processes.
test: $(VENV)/.installed browser display lint
	@start=$$(date +%s); $(BIN)/python -m pytest -q; status=$$?; \
	  echo "test suite: $$(( $$(date +%s) - start )) s"; exit $$status

clean:
	rm -rf $(VENV) demo_output
