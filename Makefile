# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EXTRAS ?= data,train,serve,sim,libero,export,dev

.PHONY: install demo test test-slow lint bench clean lerobot-env lerobot-test

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
	$(MAKE) lerobot-test

test-slow: $(VENV)/.installed-fast
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m slow

# Lint and format check; `ruff format $(LINT_DIRS)` fixes what the second line reports.
LINT_DIRS := src tests benchmarks scripts plugins examples
lint: install
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)

bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/inference.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/train.py

# LeRobot 0.4.4 + the X-VLA plugins, in their own venv (docs/lerobot.md). LeRobot pins torch<2.11: pip brings
# torch 2.10 and torchvision 0.25 from PyPI (about 8.4 GB, 4-5 min). metaworld 3.0.0 needs mujoco < 3.4.
LEROBOT_VENV ?= .venv-lerobot
$(LEROBOT_VENV)/.installed: pyproject.toml plugins/lerobot_policy_xvla_plus/pyproject.toml plugins/lerobot_robot_xvla_sim/pyproject.toml
	python3 -m venv $(LEROBOT_VENV)
	$(LEROBOT_VENV)/bin/pip install -q "lerobot[async,xvla,metaworld]==0.4.4" "mujoco==3.3.0" pytest ruff
	$(LEROBOT_VENV)/bin/pip install -q --no-deps -e . -e plugins/lerobot_policy_xvla_plus -e plugins/lerobot_robot_xvla_sim
	touch $@

lerobot-env: $(LEROBOT_VENV)/.installed

lerobot-test: lerobot-env
	OMP_WAIT_POLICY=PASSIVE $(LEROBOT_VENV)/bin/python -m pytest -q -p no:cacheprovider plugins

clean:
	rm -rf $(VENV) $(LEROBOT_VENV) build dist src/*.egg-info
