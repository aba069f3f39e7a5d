# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ECLIP := $(VENV)/bin/eclip
STAMP := $(VENV)/.installed-stamp
FASHION := ../shared/data/fashion-dev
DEMO := runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast wheel-check bench clean browser

# The web page's test drives Debian's chromium; without it (no root, no apt) that one test is skipped, not failed.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo -n ); $$SUDO apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; } || \
		echo "chromium not installed: the browser test will be skipped"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The main job on the bundled real catalogue: multi-seller offers -> prepare -> train `tiny` -> evaluate -> distil
# the query encoder that `eclip serve` embeds search queries with.
# Every step reuses its finished output on a second run (train: a finished run is left as is, an unfinished one resumes).
demo: $(STAMP)
	$(ECLIP) offers $(FASHION)/catalog.csv --out $(DEMO)/offers --per-product 3 --seed 0
	$(ECLIP) prepare $(DEMO)/offers/catalog.csv --out $(DEMO)/data
	$(ECLIP) train --data $(DEMO)/data --out $(DEMO)/model --config tiny --objective eclip --resume
	$(ECLIP) eval --model $(DEMO)/model --data $(DEMO)/data --out $(DEMO)/report
	$(ECLIP) distill --model $(DEMO)/model --data $(DEMO)/data

# The package as a user installs it (wheel -> fresh venv outside the checkout -> serve the page), then the suite
# (last, so that its summary closes the output).
test: $(STAMP) browser
	bash .ci/wheel-check
	$(PY) -m pytest -q

wheel-check:
	bash .ci/wheel-check

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The benchmarks that need no trained model (about 1.5 h on 2 cores); bench/eval.py and bench/serve.py take a RUN_DIR.
bench: $(STAMP)
	$(PY) bench/prepare.py
	$(PY) bench/train.py --part cpu
	$(PY) bench/graph.py --part fashion
	$(PY) bench/rec.py

clean:
	rm -rf runs bench/results
