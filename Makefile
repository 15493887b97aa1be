# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= data,train,serve,sim,libero,export,dev

.PHONY: install demo test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull several GB of CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# OpenVINO, the exported graphs' second runtime, only where its tests run.
$(VENV)/.installed-fast: $(VENV)/.installed
	$(PIP) install -q -e ".[openvino]"
	touch $@

demo: install
	OMP_WAIT_POLICY=PASSIVE $(VENV)/bin/xvla demo

test: $(VENV)/.installed-fast
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

test-slow: $(VENV)/.installed-fast
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts

bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/inference.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/train.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
