# Two commands on a fresh machine: `make app` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: app test install checkpoints bench clean browser-deps

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the local CPU build, never a CUDA download
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(BIN)/streamlit run workbench/app.py --server.headless true

# headless Chromium + its driver (Debian packages) for tests/workbench/test_browser.py; when they
# cannot be installed (no root, no apt) the browser test skips and says why
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "browser-deps: could not install chromium; the browser test will be skipped"; \
	else echo "browser-deps: no apt-get; the browser test will be skipped"; fi

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q tests

# retrain the shipped checkpoints and their Transformer baselines into runs/shipped (see the model cards)
checkpoints: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/train_checkpoints.sh runs/shipped

bench: $(STAMP)
	$(BIN)/python benchmarks/scaling.py

clean:
	rm -rf $(VENV) build *.egg-info
