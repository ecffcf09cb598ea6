# Two commands: `make demo` (install, then run the main job on the bundled default) and
# `make test` (install, then run the whole test suite). Both create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench docs-images clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) sweeps/lambda_sweep.py

test: $(STAMP)
	$(PY) -m pytest

# the README's demo pictures: the demo sweep in a scratch folder, its report, two PNGs copied
docs-images: $(STAMP)
	rm -rf build/demo && mkdir -p build/demo
	cd build/demo && $(abspath $(PY)) $(CURDIR)/sweeps/lambda_sweep.py && \
		$(abspath $(PY)) $(CURDIR)/analysis/pareto.py --out report
	cp build/demo/report/front_latency.png docs/images/demo_front_latency.png
	cp build/demo/report/acc_curves.png docs/images/demo_acc_curves.png

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) mlruns mlflow.db ray_results build
