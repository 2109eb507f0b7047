# The two commands: `make run` serves on 127.0.0.1:8000 with the SQLite default;
# `make test` runs the linters, the type checker and every test. `make bench` writes
# docs/performance.md (about 11 minutes on 2 cores).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: lock install run test chaos lint typecheck pytest clean bench bench-tools browser-deps screenshots

# Every dependency (the service's, the tests' and the benchmark's) at the version and hashes
# requirements.lock records; then the project itself, which adds none. `make lock` updates it.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Re-resolve every dependency to its newest allowed version and record the hashes.
lock: $(STAMP)
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
		--no-emit-find-links --extra dev --extra bench --output-file requirements.lock pyproject.toml

# The benchmark's tools, which the smoke run in `make test` needs too: the bench extra
# (uvicorn, matplotlib, py-spy) and wrk from Debian's packages (installed when run as root).
# Node.js, npm and redis-server come with the machine; bench/run.py says so if one is missing.
$(BENCH_STAMP): $(STAMP)
	touch $(BENCH_STAMP)

bench-tools: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
		else echo "wrk is missing (sudo apt-get install wrk): the bench smoke test will skip" >&2; fi; }

bench: bench-tools
	@command -v wrk >/dev/null || { echo "make bench needs wrk: sudo apt-get install wrk" >&2; exit 1; }
	$(BIN)/python bench/run.py

# The browser tests (tests/test_browser.py) drive Debian's chromium through Playwright, which
# never downloads a browser of its own here. Without chromium they skip (CI installs it in .ci/run).
browser-deps:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; }

# Re-shoot docs/screenshots/*.png from the browser tests.
screenshots: install browser-deps
	COMMONS_SESSION_UPDATE_SCREENSHOTS=1 $(BIN)/pytest tests/test_browser.py tests/test_browser_storage.py -q

run: install
	$(BIN)/commons-session serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install
	$(BIN)/mypy

# One pytest worker per core (tests/backends.py gives every test its own databases and servers);
# a module's tests stay on one worker, beside the fixtures they share. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
pytest: install bench-tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

# The long fault-injection cases (tests marked chaos): kill -9 under load, slow clients, full disks.
chaos: install bench-tools
	$(BIN)/pytest -m chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
