# Two commands on a fresh machine: `make run` and `make test`.
# Both create .venv from pyproject.toml when it is missing or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# localstripe (GPL-3.0), the tests' Stripe stand-in, lives in its own venv and runs as its own
# process (tests/stand_ins/localstripe.py); it is never installed into $(VENV).
LOCALSTRIPE_VERSION := 1.15.10
LOCALSTRIPE_STAMP := .venv-localstripe/.installed-$(LOCALSTRIPE_VERSION)

BENCH_STAMP := $(VENV)/.installed-bench
# `make bench BENCH_SECONDS=5` is the quick mode; BENCH_ARGS passes more options
# (e.g. BENCH_ARGS="--workers 1 2" for the 1 → 2 worker scaling).
BENCH_SECONDS ?= 10
BENCH_ARGS ?=
APT := DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=300

GROWTH_PAYMENTS ?= 1000000

.PHONY: run test bench bench-growth wrk clean-db

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(LOCALSTRIPE_STAMP):
	test -x .venv-localstripe/bin/python || $(PYTHON) -m venv .venv-localstripe
	.venv-localstripe/bin/python -m pip install --quiet localstripe==$(LOCALSTRIPE_VERSION)
	touch $(LOCALSTRIPE_STAMP)

run: $(STAMP)
	$(BIN)/python run.py

# Two pytest processes (pytest-xdist), each taking whole test files: most e2e tests wait on a
# server, a database or a timer, so two overlap well on two cores; module fixtures (one server per
# file) are set up once. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(LOCALSTRIPE_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# wrk is the only load generator: a Debian package, installed as root when missing.
wrk:
	@command -v wrk >/dev/null || { \
	  [ "$$(id -u)" = 0 ] || { echo "wrk is missing; install it as root: apt-get install wrk" >&2; exit 1; }; \
	  $(APT) install wrk || { $(APT) update && $(APT) install wrk; }; }

bench: $(BENCH_STAMP) wrk
	$(BIN)/python bench/bench_compare.py --duration $(BENCH_SECONDS) $(BENCH_ARGS)

# Issue 25: every read and write measure, fresh vs GROWTH_PAYMENTS more payments stored (bench/README.md).
bench-growth: $(BENCH_STAMP) wrk
	$(BIN)/python bench/data_growth.py --payments $(GROWTH_PAYMENTS) --duration $(BENCH_SECONDS) $(BENCH_ARGS)

clean-db:
	rm -rf var
