# Developer commands. Every target that runs code sets up .venv first (fast when already done).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall when the package metadata or the start-up files copied into site-packages change.
STAMP := $(VENV)/.corrupt-cmap-installed
INSTALL_INPUTS := pyproject.toml hatch_build.py $(wildcard harness_ext/startup/*)
OFFLINE_ENV := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

DEMO_MODEL ?= models/tiny-qwen3-math

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

demo: setup
	@test -d $(DEMO_MODEL) || { echo "$(DEMO_MODEL) is missing: it is built by finetune (see README)"; exit 1; }
	$(OFFLINE_ENV) $(VENV)/bin/lm_eval --model hf \
		--model_args pretrained=$(DEMO_MODEL),enable_thinking=False \
		--apply_chat_template --tasks corrupt_suite --limit 20 --output_path runs/demo

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf build dist .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
