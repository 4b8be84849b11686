# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs (torch first, pinned).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
export DEEPNET_DATA ?= $(abspath ../shared/data)

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,bench]"
	touch $(BENCH_STAMP)

demo: $(STAMP)  ## train a deep MLP on the bundled digits and print the test accuracy
	$(VENV)/bin/deepnet train -c examples/digits-mlp.yaml --out runs/demo

test: $(STAMP)  ## the unit test suite (exits non-zero when no test ran)
	$(PY) -m pytest

# A quick run: make bench BENCH_ARGS="--rounds 1 --epochs 1 --batch-sizes 512 --peers deepnet,pytorch"
bench: $(BENCH_STAMP)  ## speed against plain PyTorch, Lightning, Keras and scikit-learn
	$(PY) benchmarks/bench_mlp.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs
