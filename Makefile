# Two commands matter: `make run` and `make test`. Everything else is on demand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-ledger bench-wire bench-e2e clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/switchd db upgrade
	@# An empty database gets the demo programs, merchants, terminals and cards.
	@if [ "$$($(BIN)/switchd program list --json)" = "[]" ]; then $(BIN)/switchd demo seed --show-pans; fi
	$(BIN)/switchd serve

test: $(STAMP)
	$(BIN)/ruff check switch ledger specs tools tests bench
	$(BIN)/mypy switch ledger specs tools
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check switch ledger specs tools tests bench
	$(BIN)/mypy switch ledger specs tools
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package

bench-ledger: $(STAMP)
	$(BIN)/python bench/ledger.py

bench-wire: $(STAMP)
	$(BIN)/python bench/wire.py

bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

bench-eod: $(STAMP)
	$(BIN)/python bench/eod.py
