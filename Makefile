# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run demo test test-ui bench soak install clean

install: $(VENV)/.installed node_modules/.installed

# Re-installs only when a requirements file changes (the stamp is newer than both otherwise).
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# Azurite 3.35.0, pinned in package.json / package-lock.json (3.36+ needs Node 21+).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: install
	$(PY) -m pytest --ignore=tests/ui $(PYTEST_ARGS)

# The status page in a real headless Chromium: Debian's chromium (and an emoji font, for the screenshot),
# installed when missing (as root, like CI).
test-ui: install
	test -x /usr/bin/chromium && fc-list 2>/dev/null | grep -qi 'color emoji' || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium fonts-noto-color-emoji; }
	$(PY) -m pytest tests/ui $(PYTEST_ARGS)

run: install
	$(PY) -m sandbox.run

# The seed's scenarios, checked step by step: against the sandbox `make run` keeps running, else one of its own.
demo: install
	$(PY) -m sandbox.demo

# Every benchmark, one table (also written to bench/RESULTS.md): latency through the real app on the local
# host, a steady-state poll, the backfill of 10,000 referrals, import time. About 10 minutes.
bench: install
	$(PY) -m bench

# The chaos test, longer: more rounds and operations than in `make test` (CHAOS_SEED=N replays a run); then the
# backfill's memory at 2,000 and at 50,000 referrals (about 15 minutes).
soak: install
	CHAOS_ROUNDS=$${CHAOS_ROUNDS:-6} CHAOS_OPERATIONS=$${CHAOS_OPERATIONS:-120} $(PY) -m pytest tests/test_chaos.py -k converges -p no:cacheprovider $(PYTEST_ARGS)
	$(PY) -m bench --backfill-only --backfill 2000 50000

clean:
	rm -rf $(VENV) node_modules .pytest_cache
