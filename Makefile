# Two commands: `make demo` (install, then run the main job on the bundled default) and
# `make test` (install, then run the whole test suite, as CI does). Both create .venv on first use, from
# requirements.lock: exact versions with their hashes, so every machine installs what CI tested.
# Also: `make test-fast` (the tests that start no Ray and take at most a few seconds each, doctests
# included), `make lint` (ruff, and mypy on the library; both configured in pyproject.toml), `make lock` (renew
# requirements.lock from pyproject.toml's ranges) and `make test-latest` (the newest releases those ranges
# allow, in .venv-latest).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# pip itself and the lock tool are pinned here (a venv is made with pip, and uv writes the lock)
PIP_VERSION := 26.3
UV_VERSION  := 0.13.9
LOCK_TOOL   := build/lock-tool
LATEST_VENV ?= .venv-latest

.PHONY: install demo test test-fast test-latest lock lint bench docs-images clean

# the lock is for Python 3.11 and newer: refused with one line before a venv is made from another
define check_python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: $(PYTHON) is not Python 3.11 or newer; run make with PYTHON=python3.11 (or newer)" >&2; exit 2; }
endef

# a new venv whenever the lock changes, so that nothing outside it stays installed
$(STAMP): $(LOCK)
	$(check_python)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet pip==$(PIP_VERSION)
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) sweeps/lambda_sweep.py

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check library sweeps analysis bench tests tools
	$(PY) -m mypy

# the README's demo pictures: the demo sweep in a scratch folder, its report, two PNGs copied
docs-images: $(STAMP)
	rm -rf build/demo && mkdir -p build/demo
	cd build/demo && $(abspath $(PY)) $(CURDIR)/sweeps/lambda_sweep.py && \
		$(abspath $(PY)) $(CURDIR)/analysis/pareto.py --out report
	cp build/demo/report/front_latency.png docs/images/demo_front_latency.png
	cp build/demo/report/acc_curves.png docs/images/demo_acc_curves.png

# renew the lock: the newest releases pyproject.toml's ranges allow, for every platform and Python 3.10+,
# with every extra, capped by lock-constraints.txt (what CI's machines can install); then `make test`
lock:
	$(check_python)
	test -x $(LOCK_TOOL)/bin/uv || { $(PYTHON) -m venv $(LOCK_TOOL) && \
		$(LOCK_TOOL)/bin/python -m pip install --quiet uv==$(UV_VERSION); }
	$(LOCK_TOOL)/bin/uv pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
		--generate-hashes --constraint lock-constraints.txt --upgrade --quiet \
		--custom-compile-command "make lock" --output-file $(LOCK)

# the newest releases pyproject.toml allows, in a venv of their own: which packages moved since the lock,
# then the fast tier and one short sweep per search algorithm; fails when the newest releases break us
test-latest:
	$(check_python)
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet pip==$(PIP_VERSION)
	$(LATEST_VENV)/bin/python -m pip install --quiet -e '.[dev,cluster,bench,nir]'
	$(LATEST_VENV)/bin/python tools/lock_drift.py $(LOCK)
	$(LATEST_VENV)/bin/python -m pytest -p no:cacheprovider -m "(not slow and not lock) or searches"

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(LATEST_VENV) mlruns mlflow.db ray_results build
