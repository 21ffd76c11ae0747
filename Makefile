# Two entry points, each sets itself up on a fresh machine:
#   make demo   - creates .venv (runtime only), segments the bundled sample with the embedded LiteMedSAM weights
#   make test   - creates .venv-test (runtime + test tools + Slicer's headless MRML), runs the test suite
# Heavy checks: make test-slow (full ViT-B equivalence etc.); benchmarks: make bench.
PYTHON ?= python3
DEMO_VENV ?= .venv
TEST_VENV ?= .venv-test
PIP_FLAGS ?= --disable-pip-version-check -q

.PHONY: demo test test-slow bench clean

$(DEMO_VENV)/.installed: requirements/runtime.txt requirements/nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements/runtime.txt
	$(DEMO_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r requirements/nodeps.txt
	$(DEMO_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	touch $@

$(TEST_VENV)/.installed: requirements/runtime.txt requirements/test.txt requirements/nodeps.txt pyproject.toml
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/python -m pip install $(PIP_FLAGS) -r requirements/test.txt
	$(TEST_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps -r requirements/nodeps.txt
	$(TEST_VENV)/bin/python -m pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	touch $@

demo: $(DEMO_VENV)/.installed
	$(DEMO_VENV)/bin/python -m medseg_backend demo --output demo-output

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -m "not slow and not gpu" Testing

test-slow: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -m "slow" Testing

bench: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python benchmarks/bench_medsam3d.py
	$(TEST_VENV)/bin/python benchmarks/bench_universeg.py

clean:
	rm -rf $(DEMO_VENV) $(TEST_VENV) demo-output
