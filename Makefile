# Thin targets over the go tool; CI runs .ci/run, which calls them.

GO       ?= go
TOOLS    := $(GO) tool -modfile=tools/go.mod
BIN      := bin/confetti
TIMEOUT  ?= 15m

.PHONY: build dev test e2e bench bench-quick proto proto-check lint chart-test rules-test

# -buildvcs=auto stamps the VCS revision that 'confetti version' prints,
# whatever GOFLAGS says, whenever the tree is a checkout.
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/confetti

dev: build
	$(BIN) dev

test:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

# The real binary, run the way the README runs it (slower, so not in test).
e2e:
	$(GO) test -count=1 -timeout $(TIMEOUT) -tags e2e -run '^TestE2E' ./e2e/...

# The benchmark suite (README, Benchmarks): tables, JSON and plots in
# bench/results/<date>/. bench-quick checks the harness end to end in under
# a minute, into a new temporary directory that it keeps and prints.
BENCH_OUT ?= bench/results/$(shell date +%Y-%m-%d)

bench: build
	$(BIN) bench --out $(BENCH_OUT)

bench-quick: build
	$(BIN) bench --quick

proto:
	$(TOOLS) buf generate

proto-check: proto
	git diff --exit-code -- api/
	@untracked="$$(git ls-files --others --exclude-standard -- api/)"; \
	if [ -n "$$untracked" ]; then \
		echo "generated files not committed:"; echo "$$untracked"; exit 1; \
	fi

lint:
	$(GO) vet ./...
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l reports:"; echo "$$unformatted"; exit 1; \
	fi
	$(TOOLS) staticcheck ./...

# The Helm chart without a cluster: helm lint and renders with the Helm Go
# library, every object decoded strictly into its Kubernetes type and
# checked (tools/chartcheck); the roles' config keys against the binary's
# flags; then the alert rules.
chart-test: build
	cd tools && CONFETTI_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 ./chartcheck/
	$(MAKE) rules-test

# The alert rules (deploy/prometheus) with promtool: syntax, then the unit
# tests of deploy/prometheus/tests.
rules-test:
	$(TOOLS) promtool check rules deploy/prometheus/rules.yaml
	$(TOOLS) promtool test rules deploy/prometheus/tests/*.yaml
