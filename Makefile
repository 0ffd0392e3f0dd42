# Every target installs what it needs into .venv first, so a fresh clone needs no manual step.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
UV := $(VENV)/bin/uv
FIND_LINKS := $(if $(PIP_FIND_LINKS),--find-links $(PIP_FIND_LINKS))
# Imports write their bytecode caches (a shell that sets PYTHONDONTWRITEBYTECODE would make every test
# process recompile torch: minutes each on a slow machine).
unexport PYTHONDONTWRITEBYTECODE

NPM ?= npm
VSCODE := editors/vscode
NODE_STAMP := $(VSCODE)/node_modules/.installed
CHECK_NODE = command -v $(NPM) >/dev/null 2>&1 || { echo "make editors: '$(NPM)' not found. The VS Code extension needs Node.js 20 or newer with npm (https://nodejs.org); install it, or set NPM=/path/to/npm." >&2; exit 1; }; \
	node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' || { echo "make editors: Node.js 20 or newer is required (found $$(node --version))." >&2; exit 1; }

.PHONY: install test test-python test-editors test-integration test-vscode editors demo lint clean

install: $(STAMP)

# uv installs in parallel and in Rust: on a slow 2-core machine the whole install takes ~5 minutes
# where pip took over 20. The venv gets no pip of its own (ensurepip alone took ~4 minutes there).
# torch is pinned to the CPU build: where pip is told of a local wheel folder (PIP_FIND_LINKS), uv
# looks there too.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --without-pip $(VENV)
	test -x $(UV) || $(PYTHON) -m pip --python $(PY) install --quiet uv
	$(UV) pip install --quiet --python $(PY) $(FIND_LINKS) torch==2.13.0 -e '.[dev]'
	touch $(STAMP)

# The editor clients first (`make test-editors`: the VS Code extension, needs Node.js 20+), then the Python
# suite (`make test-python`: no Node needed), which has the Neovim plugin's tests (tests/editors, a
# headless nvim from the dev extra).
# Two workers, one module each at a time (module-scoped servers stay in one process).
test: test-editors test-python

test-editors: editors

test-python: $(STAMP)
	$(PY) -m pytest -q -ra --durations=30 -n 2 --dist loadscope

# Against real llama.cpp (tests/integration): the default model exported to GGUF, compared with our
# engine token for token in llama-cpp-python, and served by `python -m llama_cpp.server` to the remote
# backend and the language server. llama-cpp-python[server] goes into .venv first: from a prebuilt wheel
# where PIP_FIND_LINKS names a folder holding one (seconds), else uv compiles llama.cpp (a C++ compiler
# and about 20 minutes on a 2-core machine). Not part of `make test`, which skips these tests while
# llama_cpp is not importable (and runs them, in seconds, once it is).
LLAMA_CPP_PYTHON ?= llama-cpp-python[server]==0.3.36
LLAMA_STAMP := $(VENV)/.llama-cpp-installed

test-integration: $(STAMP) $(LLAMA_STAMP)
	$(PY) -m pytest -q -ra -m integration tests/integration

$(LLAMA_STAMP): $(STAMP)
	$(UV) pip install --quiet --python $(PY) $(FIND_LINKS) '$(LLAMA_CPP_PYTHON)' torch==2.13.0
	touch $@

# The VS Code extension: type-check and compile (npm test runs tsc, then its node tests, one of them
# against the real server in .venv with the default model), then bundle with esbuild and package the
# .vsix offline (`npm run package` runs the bundle step as vscode:prepublish). Node 20+ with npm is
# required; without it this stops with a message that says so.
editors: $(STAMP) $(NODE_STAMP)
	@$(CHECK_NODE)
	cd $(VSCODE) && $(NPM) test --silent
	cd $(VSCODE) && $(NPM) run --silent package
	@ls -l $(VSCODE)/codellama-local.vsix

$(NODE_STAMP): $(VSCODE)/package.json $(VSCODE)/package-lock.json
	@$(CHECK_NODE)
	cd $(VSCODE) && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

# The packaged extension in a real VS Code (editors/vscode/e2e/vscode.e2e.js): code-server from npm
# (VS Code 1.100) in Debian's headless chromium, driven by playwright-core (no browser download), with
# the real server and default model; about 30 s. code-server and playwright-core go into
# .cache/vscode-e2e once (about a minute). Needs Debian's chromium, ripgrep and libkrb5-dev (.ci/run
# installs them): code-server's kerberos module compiles against gssapi.h, and @vscode/ripgrep would
# download rg from GitHub unless its download cache already holds the same version (Debian's rg 13.0.0).
E2E_DIR := .cache/vscode-e2e
E2E_STAMP := $(E2E_DIR)/.installed
CHROMIUM ?= /usr/bin/chromium
RG_CACHE := $(E2E_DIR)/tmp/vscode-ripgrep-cache-1.15.11

test-vscode: $(STAMP) editors $(E2E_STAMP)
	CODELLAMA_E2E_MODULES=$(abspath $(E2E_DIR)) CODELLAMA_E2E_PYTHON=$(abspath $(PY)) CHROMIUM=$(CHROMIUM) \
		node $(VSCODE)/e2e/vscode.e2e.js

$(E2E_STAMP): $(VSCODE)/e2e/package.json $(VSCODE)/e2e/package-lock.json
	@$(CHECK_NODE)
	@{ test -x $(CHROMIUM) && command -v rg >/dev/null && test -e /usr/include/gssapi/gssapi.h; } || { echo "make test-vscode needs Debian's chromium, ripgrep and libkrb5-dev: apt-get install chromium ripgrep libkrb5-dev (or set CHROMIUM=/path/to/chromium)" >&2; exit 1; }
	mkdir -p $(RG_CACHE)
	d=$$(mktemp -d) && cp "$$(command -v rg)" $$d/rg && tar -czf $(RG_CACHE)/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz -C $$d rg && rm -r $$d
	cp $(VSCODE)/e2e/package.json $(VSCODE)/e2e/package-lock.json $(E2E_DIR)/
	# As root, code-server's postinstall needs unsafe-perm; node-pty's runs `npx node-gyp`, which needs yes.
	cd $(E2E_DIR) && npm_config_unsafe_perm=true npm_config_yes=true TMPDIR=$(abspath $(E2E_DIR))/tmp \
		$(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

demo: $(STAMP)
	$(PY) -m engine demo

lint: $(STAMP)
	$(PY) -m ruff check engine lsp_server tests benchmarks recipes
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache $(VSCODE)/node_modules $(VSCODE)/out $(VSCODE)/*.vsix $(E2E_DIR)
