# reot_mm development environment and entry points.
#
#   make env     create $(VENV) with the pinned dev stack (requirements/constraints-dev.txt)
#   make test    env, then run the test suite
#   make demo    env, then tools/run_demo.py
#   make bench   env, then the CPU speed and memory benchmarks (benchmarks/bench_*.py but
#                bench_gpu.py)
#   make bench-gpu   env, then benchmarks/bench_gpu.py (needs a CUDA device)
#   make accuracy    env, then the digits-LT accuracy scripts (benchmarks/digits_*.py that
#                report accuracy; each trains several seeds)
#   make reliability env, then benchmarks/reliability_matrix.py (writes docs/reliability.md)
#                and benchmarks/digits_resume_check.py
#   make clean-env   delete $(VENV)
#
# benchmarks/check_outputs_unchanged.py compares this tree with a base commit and needs
# --base, so no target runs it: `$(VENV)/bin/python benchmarks/check_outputs_unchanged.py
# --base <commit>`.
#
# Each install stage writes a stamp file inside the venv and depends on the requirement
# files it reads, so on a ready environment `make test` installs nothing.
# See docs/install.md.

PYTHON ?= python3
VENV ?= .venv
# Optional folder of prebuilt wheels (e.g. mmcv 2.1.0 with ops) handed to pip.
WHEELHOUSE ?= $(REOT_WHEELHOUSE)
# Extra pytest flags, appended to `pytest $(TESTS) -q` (e.g. PYTEST_ARGS='-x --junitxml=out.xml').
TESTS ?= tests
PYTEST_ARGS ?=

VENV_PYTHON := $(VENV)/bin/python
# pyvenv.cfg stands for the venv: bin/python is a symlink whose mtime is the base interpreter's.
VENV_CFG := $(VENV)/pyvenv.cfg
PIP := $(VENV_PYTHON) -m pip
CONSTRAINTS := requirements/constraints-dev.txt
FIND_LINKS := $(if $(strip $(WHEELHOUSE)),--find-links $(abspath $(WHEELHOUSE)))
PIP_INSTALL := $(PIP) install --disable-pip-version-check -c $(CONSTRAINTS) $(FIND_LINKS)

STAMP_TORCH := $(VENV)/.stamp-torch
STAMP_MMCV := $(VENV)/.stamp-mmcv
STAMP_DEPS := $(VENV)/.stamp-deps
STAMP_DEV := $(VENV)/.stamp-dev

# Speed/memory benchmarks run by `make bench`; bench_gpu.py needs CUDA (make bench-gpu).
BENCH_SCRIPTS := $(filter-out benchmarks/bench_gpu.py,$(sort $(wildcard benchmarks/bench_*.py)))
# Accuracy benchmarks (train several seeds each); the README and docs tables come from them.
ACCURACY_SCRIPTS := benchmarks/digits_lt_accuracy.py benchmarks/digits_sinkhorn_inference.py \
	benchmarks/digits_shifted_test.py benchmarks/digits_contrastive.py benchmarks/digits_gml.py

.PHONY: env test demo bench bench-gpu accuracy reliability clean-env

env: $(STAMP_DEV)

$(VENV_CFG):
	$(PYTHON) -m venv $(VENV)

$(STAMP_TORCH): $(VENV_CFG) requirements/build.txt $(CONSTRAINTS)
	$(PIP_INSTALL) -r requirements/build.txt
	touch $@

# Without --no-build-isolation pip builds mmcv against a throw-away torch and silently
# leaves the ops out; with WHEELHOUSE holding the matching wheel nothing is compiled.
$(STAMP_MMCV): $(STAMP_TORCH) requirements/mmcv.txt
	MMCV_WITH_OPS=1 $(PIP_INSTALL) --no-build-isolation -r requirements/mmcv.txt
	touch $@

$(STAMP_DEPS): $(STAMP_MMCV) requirements/dev.txt
	$(PIP_INSTALL) -r requirements/dev.txt
	touch $@

$(STAMP_DEV): $(STAMP_DEPS) setup.py
	$(PIP) install --disable-pip-version-check --no-deps --no-build-isolation -e .
	@$(VENV_PYTHON) -c "from mmcv.ops import RoIAlign, nms" || { \
	  echo >&2 ""; \
	  echo >&2 "ERROR: mmcv is installed without its compiled ops (from mmcv.ops import RoIAlign, nms failed)."; \
	  echo >&2 "       mmdet cannot run without them. Rebuild mmcv with:"; \
	  echo >&2 "         MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation --no-deps --force-reinstall --no-cache-dir mmcv==2.1.0"; \
	  echo >&2 "       or run 'make clean-env && make env' (optionally with WHEELHOUSE=<folder with the prebuilt wheel>)."; \
	  exit 1; }
	touch $@

test: env
	$(VENV_PYTHON) -m pytest $(TESTS) -q $(PYTEST_ARGS)

demo: env
	$(VENV_PYTHON) tools/run_demo.py

bench: env
	@set -e; for script in $(BENCH_SCRIPTS); do \
	  echo "== $$script"; $(VENV_PYTHON) "$$script"; \
	done

bench-gpu: env
	$(VENV_PYTHON) benchmarks/bench_gpu.py

accuracy: env
	@set -e; for script in $(ACCURACY_SCRIPTS); do \
	  echo "== $$script"; $(VENV_PYTHON) "$$script"; \
	done

reliability: env
	$(VENV_PYTHON) benchmarks/reliability_matrix.py
	$(VENV_PYTHON) benchmarks/digits_resume_check.py

clean-env:
	rm -rf $(VENV)
