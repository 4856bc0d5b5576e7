# Two commands matter: `make run` and `make test`. Everything else is on demand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
STAMP := $(VENV)/.compiled
# The request path's modules, compiled in place by mypyc (setup.py's list): rebuilt when one changes.
COMPILED_SRC := $(shell sed -n 's/^    "\([a-z_/]*\.py\)",$$/\1/p' setup.py)

.PHONY: run test test-unit test-fast lint bench-ledger bench-post-batch bench-idle-cost bench-wire bench-e2e bench-fuzz-memory bench-portal clean venv

# Installed interpreted first (editable), so that mypyc then type-checks against the real libraries.
$(INSTALLED): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@# The venv's own setuptools builds the extensions in place: a current one knows pyproject.toml.
	$(BIN)/pip install -q --disable-pip-version-check 'setuptools>=77'
	SWITCHD_PURE=1 $(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

# SWITCHD_PURE=1 make venv (or test, run): remove the compiled modules and run interpreted.
$(STAMP): $(INSTALLED) $(COMPILED_SRC)
ifeq ($(SWITCHD_PURE),1)
	find switch ledger specs -name '*.so' -delete
	rm -f $(STAMP)
else
	@# From nothing each time (the C objects are kept in build/): a module taken off the list must
	@# not leave its extension behind, shadowing its source.
	find switch ledger specs -name '*.so' -delete
	$(BIN)/python setup.py -q build_ext --inplace
	@# mypyc rewrites only what changed: mark every extension as built from the sources as they are.
	find switch ledger specs -name '*.so' -exec touch {} +
	$(BIN)/python -m switch.compiled
	touch $(STAMP)
endif

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/switchd db upgrade
	@# An empty database gets the demo programs, merchants, terminals and cards.
	@if [ "$$($(BIN)/switchd program list --json)" = "[]" ]; then $(BIN)/switchd demo seed --show-pans; fi
	@# The portal comes up with the switch ([portal] enabled): its address and the demo logins.
	@echo "portal: $$($(BIN)/switchd portal --show-url)"
	@$(BIN)/switchd demo logins
	$(BIN)/switchd serve

test: $(STAMP)
	$(BIN)/ruff check cli switch ledger specs tools portal tests bench
	$(BIN)/mypy cli switch ledger specs tools portal
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package
	@# -rs: every skipped test and why, in the summary (the browser test without chromium, say).
	$(BIN)/pytest -rs

# The tiers (tests/conftest.py): unit needs no PostgreSQL and no daemon; fast adds the database
# tests but starts no daemon. `make test` runs every tier.
test-unit: $(STAMP)
	$(BIN)/pytest -m unit

test-fast: $(STAMP)
	$(BIN)/pytest -m "unit or db"

lint: $(STAMP)
	$(BIN)/ruff check cli switch ledger specs tools portal tests bench
	$(BIN)/mypy cli switch ledger specs tools portal
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package

bench-ledger: $(STAMP)
	$(BIN)/python bench/ledger.py

bench-post-batch: $(STAMP)
	$(BIN)/python bench/post_batch.py

bench-idle-cost: $(STAMP)
	$(BIN)/python bench/idle_cost.py

bench-wire: $(STAMP)
	$(BIN)/python bench/wire.py

bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e.py

# The daemon's memory across rounds of fuzzed frames; ARGS=--quick for a short run.
bench-fuzz-memory: $(STAMP)
	$(BIN)/python bench/fuzz_memory.py $(ARGS)

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache
	find switch ledger specs -name '*.so' -delete

bench-eod: $(STAMP)
	$(BIN)/python bench/eod.py

# The portal under 20 users on a ledger of a million journals, and the switch beside it; ARGS=--quick.
bench-portal: $(STAMP)
	$(BIN)/python bench/portal.py $(ARGS)
