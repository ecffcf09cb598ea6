# Two commands: `make demo` (install, then run the main job on the bundled default) and
# `make test` (install, then run the whole test suite, as CI does). Both create .venv on first use.
# Also: `make test-fast` (the tests that start no Ray and take at most a few seconds each, doctests
# included) and `make lint` (ruff, configured in pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the tests also need the bench extra (SpikingJelly, the peer the IF simulator is checked against) and
# the nir extra (nir, nirtorch and snnTorch, which re-runs the NIR export)
TEST_STAMP := $(VENV)/.installed-bench-nir

.PHONY: install demo test test-fast lint bench docs-images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench,nir]'
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) sweeps/lambda_sweep.py

test: $(TEST_STAMP)
	$(PY) -m pytest

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check library sweeps analysis bench tests

# the README's demo pictures: the demo sweep in a scratch folder, its report, two PNGs copied
docs-images: $(STAMP)
	rm -rf build/demo && mkdir -p build/demo
	cd build/demo && $(abspath $(PY)) $(CURDIR)/sweeps/lambda_sweep.py && \
		$(abspath $(PY)) $(CURDIR)/analysis/pareto.py --out report
	cp build/demo/report/front_latency.png docs/images/demo_front_latency.png
	cp build/demo/report/acc_curves.png docs/images/demo_acc_curves.png

bench: $(TEST_STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) mlruns mlflow.db ray_results build
