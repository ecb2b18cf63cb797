# custos — the two commands:
#   make demo   install what is missing, initialise a SoftHSM2 token and a swtpm TPM under
#               .custos/, start the service on SQLite and run the whole story end to end
#   make test   the same set-up, then the whole test suite (real SoftHSM2 and swtpm included)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
STATE ?= $(CURDIR)/.custos
APT_PACKAGES := softhsm2 swtpm swtpm-tools tpm2-tools opensc openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test deps system-deps node-deps test-deps bench-deps build bench clean

demo: deps
	@bash scripts/demo.sh "$(STATE)"

test: deps test-deps
	@mkdir -p .custos
	@status=0; npx vitest run --reporter=default --reporter=json --outputFile.json=.custos/vitest.json || status=$$?; \
	if [ -f .custos/vitest.json ]; then node scripts/test-summary.mjs .custos/vitest.json; fi; exit $$status

bench: deps bench-deps
	npm run --silent bench

deps: system-deps node-deps

# The bench also drives the server with wrk (a C load generator) and builds bench/openloop.c
# against libcrypto (OpenSSL's headers: libssl-dev) to play the enclaves of the sessions rows;
# the tests build that generator too.
BENCH_APT_PACKAGES := wrk libssl-dev
bench-deps:
	$(call apt-install,$(BENCH_APT_PACKAGES))
test-deps:
	$(call apt-install,libssl-dev)

# System packages, installed only when missing; the package lists are refreshed once first
# (they may be empty on a new machine).
define apt-install
@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  echo "installing:$$missing"; \
  $(SUDO) apt-get update -qq; \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
else echo "system packages present: $(1)"; fi
endef
system-deps:
	$(call apt-install,$(APT_PACKAGES))

# npm ci when node_modules is missing or older than the lock file; it builds the native
# modules (pkcs11js, better-sqlite3) and, through `prepare`, compiles TypeScript to dist/.
node-deps:
	@if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then \
	  npm ci --no-audit --no-fund; \
	else npm run --silent build; fi

build:
	npm run --silent build

clean:
	rm -rf dist .custos
