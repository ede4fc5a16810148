# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   installs what is needed and runs the main job on the built-in assets
#   make test   installs what is needed and runs the tests (those marked slow left out)
#   make test-all  the same with the slow tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
# the cache (built-in assets, probe journal) lives in the checkout unless the caller says otherwise
export DR_CACHE_DIR ?= $(CURDIR)/.cache/dr

# Where torch comes from. Empty: pip's configured indexes (a CPU build where one is provided, as
# on this project's CI machines). On plain PyPI that is the CUDA build (GBs): for the CPU build set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: demo test test-all install system-deps bench clean

system-deps:
	./scripts/install-system-deps.sh $(PYTHON)

$(BIN)/python: | system-deps
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "dr needs Python 3.11 (the bpy 5.0 wheel): set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: a torch pulled in by another package could be any build
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP) -c constraints.txt -e '.[all,dev]'
	touch $@

install: system-deps $(VENV)/.installed

demo: install
	$(BIN)/dr-data generate --n 16 --preset cpu-demo --out $(DEMO)/run
	$(BIN)/dr-data validate $(DEMO)/run
	$(BIN)/dr-data preview $(DEMO)/run --out $(DEMO)/preview
	@echo "demo: 16 path-traced clips (128x128, 8 frames, rgb and every G-buffer) in $(DEMO)/run/shards;"
	@echo "      open $(DEMO)/preview/index.html in a browser; dr-data status $(DEMO)/run shows the run"

test: install
	$(BIN)/python -m pytest -q -m "not slow" --durations=25

test-all: install
	$(BIN)/python -m pytest -q --durations=25

bench: install
	$(BIN)/python bench/bench_scenes.py
	$(BIN)/python bench/bench_probe.py
	$(BIN)/python bench/bench_render.py
	$(BIN)/python bench/bench_generate.py

clean:
	rm -rf $(VENV) .cache $(DEMO) .pytest_cache
