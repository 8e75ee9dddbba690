# The two commands a newcomer needs: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run demo test bench install clean

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
	$(PY) -m pytest $(PYTEST_ARGS)

run: install
	$(PY) -m sandbox.run

# The seed's scenarios, checked step by step: against the sandbox `make run` keeps running, else one of its own.
demo: install
	$(PY) -m sandbox.demo

clean:
	rm -rf $(VENV) node_modules .pytest_cache
