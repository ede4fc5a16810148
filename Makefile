# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   installs what is needed and runs the main job on the built-in assets
#   make test   installs what is needed and runs the tests
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   ?= demo
# the cache (built-in assets, probe journal) lives in the checkout unless the caller says otherwise
export DR_CACHE_DIR ?= $(CURDIR)/.cache/dr

.PHONY: demo test install system-deps bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "dr needs Python 3.11 (the bpy 5.0 wheel): set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)

# torch first and pinned: an unpinned torch (or one pulled in by another package) brings GBs of CUDA
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	./scripts/install-system-deps.sh
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[all,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/dr-data assets build --builtin
	$(BIN)/dr-data scenes sample --preset cpu-demo --seed 0 --index 0 --n 16 --out $(DEMO)/scenes.jsonl
	$(BIN)/dr-data assets show
	@echo "demo: 16 scene specs in $(DEMO)/scenes.jsonl; built-in assets in $(DR_CACHE_DIR)"

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/bench_scenes.py
	$(BIN)/python bench/bench_probe.py

clean:
	rm -rf $(VENV) .cache $(DEMO) .pytest_cache
