# The two commands of the quick start: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint bench clean postgres chromium faketime wrk

# Editable as a plain .pth naming this directory (setuptools' compat mode): its default
# editable finder is imported at every interpreter start, ~13 ms of each `lictor` command
# (ADR 11). A setuptools without compat mode gets the default. The Makefile is a
# prerequisite so that a change of how it installs reaches an existing .venv.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat \
	  || $(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lictor demo

lint: install
	$(VENV)/bin/ruff check lictor tests bench tools
	$(VENV)/bin/ruff format --check lictor tests bench tools
	$(VENV)/bin/mypy --strict lictor

# The tests start their own throwaway PostgreSQL from Debian's binaries (tests/postgres.py).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql </dev/null; }

# The console tests drive Debian's Chromium through Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium </dev/null; }

# The clock tests step a server's wall clock with Debian's libfaketime (tests/server/test_clock.py).
faketime:
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libfaketime faketime </dev/null; }

test: lint postgres chromium faketime
	$(VENV)/bin/pytest -q

# The HTTP bench loads its targets with Debian's wrk (bench/http_bench.py).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk </dev/null; }

bench: install wrk
	$(PY) bench/http_bench.py
	$(PY) bench/log_bench.py
	$(PY) bench/decide_bench.py
	$(PY) bench/enforce_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
