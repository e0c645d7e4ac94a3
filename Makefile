# sora_nb: the README's commands. Both are idempotent and need only Python 3.11 (or 3.10+) and make.
#   make demo   create .venv, install, generate a clip with the embedded model, print where it is
#   make test   the test suite, offline (HF_HUB_OFFLINE=1)
#   make lab    JupyterLab on notebooks/ (online: notebook 08 may load pipelines from the Hub)
#   make bench  the speed benchmarks in bench/ (generate, trace, controls), tables printed
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPEC := $(VENV)/.torch-spec
# the tests, the demo and the benches never reach the Hub; `make lab` may (notebook 08 loads real pipelines)
test demo bench: export HF_HUB_OFFLINE := 1
test demo bench: export TRANSFORMERS_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lab bench browser-deps clean FORCE

install: $(STAMP)

# torch first, pinned, and a CPU build: PyPI's Linux torch is a CUDA build of several GB. The CPU wheel is taken
# from pip's find-links when the machine keeps one there (this project's machines do), else from PyTorch's CPU
# index (TORCH_INDEX), else, with a warning, from PyPI. Changing TORCH_SPEC reinstalls (the spec is recorded in
# $(SPEC)); a venv that lost its pip (a failed `python -m venv`) is made again.
$(SPEC): FORCE
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || { \
	  echo "could not create $(VENV) with $(PYTHON) -m venv (on Debian or Ubuntu: apt install python3-venv)"; exit 1; }
	@echo "$(TORCH_SPEC)" | cmp -s - $@ || echo "$(TORCH_SPEC)" > $@

$(STAMP): pyproject.toml $(SPEC)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps --no-index "$(TORCH_SPEC)" 2>/dev/null \
	  || $(PY) -m pip install -q --no-deps --timeout 30 --retries 1 --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)" \
	  || { echo "warning: no CPU build of $(TORCH_SPEC) found locally or at $(TORCH_INDEX); taking PyPI's"; \
	       $(PY) -m pip install -q --no-deps "$(TORCH_SPEC)"; }
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,lab]" -c $(SPEC)  # the torch chosen stays (a dependency needing a newer one fails here)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sora_nb)" >/dev/null
	touch $(STAMP)

demo: install
	mkdir -p out
	$(VENV)/bin/sora-nb generate "a red circle moving right" --seed 0 --duration 2 --guidance 3 -o out/demo.mp4
	@echo ""
	@echo "Open it:            out/demo.mp4"
	@echo "Notebooks:          make lab   (or: $(VENV)/bin/jupyter lab notebooks/)"

# Browser tests drive Debian's chromium with Playwright (never `playwright install`).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install chromium"; fi; }

test: install browser-deps
	CI=$${CI:-} $(PY) -m pytest -q

lab: install
	$(VENV)/bin/jupyter lab notebooks/

# the speed figures of the README's table (a few minutes); the other bench/ scripts are quality studies that take
# their own arguments and up to half an hour each (their docstrings and bench/RESULTS.md give the commands)
BENCH_SPEED := bench/bench_generate.py bench/bench_trace.py bench/bench_controls.py
bench: install
	for f in $(BENCH_SPEED); do echo "== $$f"; $(PY) $$f --threads 2 || exit 1; done

clean:
	rm -rf $(VENV) out build *.egg-info
