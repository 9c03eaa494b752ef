# Three commands matter: `make demo`, `make serve` and `make test`. Each sets up what it needs from a clean clone.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
APP_STAMP := $(VENV)/.app-installed
STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
IAC_VENV := .venv-iac
IAC_STAMP := $(IAC_VENV)/.installed

.PHONY: setup app dev iac browser demo serve test test-unit lint typecheck pytest bench screenshots clean

# Each command installs what it uses: `app` is the app's runtime (.venv with requirements.txt) and
# Azurite (node_modules), all that `make demo` and `make serve` need; `dev` adds the test and lint
# tools (requirements-dev.txt); `iac` the infrastructure checkers, only for the tests that run them;
# `browser` Chromium for the console's browser tests. `make setup` installs everything at once.
setup: dev iac

app: $(APP_STAMP) $(NODE_STAMP)

dev: $(STAMP) $(NODE_STAMP)

iac: $(IAC_STAMP)

# Headless Chromium + chromedriver (Debian packages) for the web console's browser tests: only the
# targets that run those tests need it, so `make demo` and `make serve` install no browser.
browser:
	scripts/setup_browser.sh

$(APP_STAMP): requirements.txt
	scripts/setup_python.sh $(PY)
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements.txt
	touch $@

$(STAMP): $(APP_STAMP) requirements-dev.txt
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

# Infrastructure checkers (pycep-parser, checkov) pin their own dependency trees: kept apart
# so they never constrain the app's versions.
$(IAC_STAMP): requirements-iac.txt
	scripts/setup_python.sh $(PY)
	$(PY) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(IAC_VENV)/bin/python -m pip install --quiet -r requirements-iac.txt
	touch $@

demo: app
	$(VPY) -m scripts.demo

# The whole app on this machine (Azurite, the ActiveCampaign sandbox, scripts.serve) until Ctrl-C.
serve: app
	$(VPY) -m scripts.serve_stack

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no test: that must fail, never pass quietly. Two workers
# (pytest-xdist), one per core: each starts its own Azurite, so tests never share storage across
# workers.
pytest: dev iac browser
	$(VPY) -m pytest -n 2; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test: lint typecheck pytest

# The tests that need no server, subprocess'd stack or browser (marked `unit` by each tests/ folder's
# conftest.py): seconds, not minutes, and only the app's environment to set up.
test-unit: $(STAMP)
	$(VPY) -m pytest -n 2 -m unit; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Re-take the web console's screenshots in docs/console/ (its browser tests write them there).
screenshots: dev browser
	CONSOLE_SCREENSHOTS=docs/console $(VPY) -m pytest -q tests/console/test_console_browser.py

bench: dev
	$(VPY) -m scripts.bench

clean:
	rm -rf $(VENV) $(IAC_VENV) node_modules .mypy_cache .ruff_cache .pytest_cache
