# lorakit: two commands do all set-up on a fresh machine (idempotent):
#   make demo   corpus + real-speech set + bundled model + the demo experiment + the analysis notebook; installs only the
#               base dependencies (no test, Ray, bench, search or browser extras)
#   make test   the whole suite (pytest, papermill executions, nbmake over notebooks/, browser test);
#               installs every extra the suite needs
# Also: make lab (JupyterLab on the project's environment), make bench, make clean-cache.

VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
STAMP     := $(VENV)/.lorakit-installed
TEST_STAMP := $(VENV)/.lorakit-test-installed
EXTRAS    := test,ray,bench,search,lab,tensorboard,mlflow,wandb,deploy,moonshine,datasets
# Without a GPU, install the CPU build of torch before anything can pull the multi-GB CUDA build.
# (These machines hold torch 2.13.0 CPU locally; elsewhere point TORCH_CPU at PyTorch's CPU wheel index,
# e.g. make TORCH_CPU="torch --index-url <cpu index>".) With a GPU, or a torch already present, nothing changes.
TORCH_CPU ?= torch==2.13.0
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS  := espeak-ng flite sox
# the real-speech sanity set's recordings (a data package: no command to look for, so its folder is checked)
SPHINX_DATA := /usr/share/pocketsphinx/test/data/librivox

.PHONY: setup setup-all system-deps demo test lab bench clean-cache browser-deps

setup: $(STAMP) system-deps
setup-all: $(TEST_STAMP) system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	@if ! $(PY) -c "import torch" 2>/dev/null; then \
	  if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install torch; else $(PIP) install "$(TORCH_CPU)"; fi; \
	fi
	$(PIP) install -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP) install -e ".[$(EXTRAS)]"
	touch $(TEST_STAMP)

system-deps:
	@missing=""; for b in $(APT_PKGS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	[ -d $(SPHINX_DATA) ] || missing="$$missing pocketsphinx-testdata"; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

demo: setup
	$(PY) -m lorakit demo-data
	$(PY) -m lorakit real-speech
	$(PY) -m lorakit import-model
	$(PY) -m lorakit run params/demo.yaml
	$(PY) -m lorakit analysis

# CI and `make test` execute the notebooks in the smoke profile (LORAKIT_SMOKE=1: a few steps on a
# few clips) so the suite stays within ~20 minutes; the real experiment is `make demo`.
test: setup-all browser-deps
	$(PY) -m lorakit demo-data
	$(PY) -m lorakit real-speech
	$(PY) -m lorakit import-model
	$(PY) -m lorakit import-model bundled:whisper-base
	LORAKIT_SMOKE=1 $(PY) -m pytest -q -rf --durations=25 --nbmake tests notebooks

lab: setup-all
	$(VENV)/bin/jupyter lab notebooks/

bench: setup-all
	$(PY) bench/bench.py

clean-cache:
	rm -rf .cache/lorakit/encoder .cache/lorakit/baselines
