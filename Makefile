# Two commands matter: `make run` and `make test`. Everything else is on demand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test test-unit test-fast lint chaos bench-ledger bench-post-batch bench-idle-cost bench-wire bench-e2e bench-fuzz-memory bench-portal bench-api bench-mail clean venv drill-failover

# The package, editable, with its test tools: everything runs from the source as it is.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(INSTALLED)

venv: $(INSTALLED)

run: $(INSTALLED)
	@# Card numbers and terminal keys are sealed under a master key: a demo makes one in its state dir.
	$(BIN)/switchd keys init
	$(BIN)/switchd db upgrade
	@# An empty database gets the demo programs, merchants, terminals and cards.
	@if [ "$$($(BIN)/switchd program list --json)" = "[]" ]; then $(BIN)/switchd demo seed --show-pans; fi
	@# The portal comes up with the switch ([portal] enabled): its address and the demo logins.
	@echo "portal: $$($(BIN)/switchd portal --show-url)"
	@$(BIN)/switchd demo logins
	@# The demo terminals have no MAC key: allowed here, and only here (the default refuses them).
	$(BIN)/switchd --set security.unkeyed_terminals=allow serve

test: $(INSTALLED)
	$(BIN)/ruff check cli switch ledger specs tools portal tests bench
	$(BIN)/mypy cli switch ledger specs tools portal
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package
	@# -rs: every skipped test and why, in the summary (the browser test without chromium, say).
	@# -n 2 --dist loadfile: two worker processes, each taking whole test files (a file's fixtures
	@# are set up once); every test makes its own databases and ports, so they never meet.
	$(BIN)/pytest -rs -n 2 --dist loadfile

# The tiers (tests/conftest.py): unit needs no PostgreSQL and no daemon; fast adds the database
# tests but starts no daemon. `make test` runs every tier.
test-unit: $(INSTALLED)
	$(BIN)/pytest -m unit

test-fast: $(INSTALLED)
	$(BIN)/pytest -m "unit or db"

lint: $(INSTALLED)
	$(BIN)/ruff check cli switch ledger specs tools portal tests bench
	$(BIN)/mypy cli switch ledger specs tools portal
	$(BIN)/mypy bench  # apart: bench/ledger.py would shadow the ledger package

bench-ledger: $(INSTALLED)
	$(BIN)/python bench/ledger.py

bench-post-batch: $(INSTALLED)
	$(BIN)/python bench/post_batch.py

bench-idle-cost: $(INSTALLED)
	$(BIN)/python bench/idle_cost.py

bench-wire: $(INSTALLED)
	$(BIN)/python bench/wire.py

bench-e2e: $(INSTALLED)
	$(BIN)/python bench/e2e.py

# The daemon's memory across rounds of fuzzed frames; ARGS=--quick for a short run.
bench-fuzz-memory: $(INSTALLED)
	$(BIN)/python bench/fuzz_memory.py $(ARGS)

# Faults against live daemons on a private PostgreSQL (kill -9, restarts, fuzz, connection abuse),
# about 10 minutes; exit 1 when money, a crash or an unretrieved exception is not zero. ARGS=--quick.
chaos: $(INSTALLED)
	$(BIN)/python bench/chaos.py $(ARGS)

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache

bench-eod: $(INSTALLED)
	$(BIN)/python bench/eod.py

# The portal under 20 users on a ledger of a million journals, and the switch beside it; ARGS=--quick.
bench-portal: $(INSTALLED)
	$(BIN)/python bench/portal.py $(ARGS)

bench-api: $(INSTALLED)
	$(BIN)/python bench/api.py $(ARGS)

# In-platform mail: a broadcast to 100,000 members, their inboxes, the e-mail fan-out.
bench-mail: $(INSTALLED)
	$(BIN)/python bench/mail_broadcast.py

# The failover drill: a pg_auto_failover formation, two daemons behind HAProxy, the primary killed
# under load, its rejoin, a switchover back; about 3-5 minutes. Installs Debian's
# pg_auto_failover and HAProxy when missing (as root); bench/results/failover.json.
DRILL_PACKAGES := postgresql-15-auto-failover pg-auto-failover-cli haproxy
drill-failover: $(INSTALLED)
	@if ! command -v pg_autoctl >/dev/null || ! command -v haproxy >/dev/null; then \
		apt-get update -q && apt-get install -y -q $(DRILL_PACKAGES); fi
	timeout 600 $(BIN)/python bench/failover.py $(ARGS)
