# Thin targets over the go tool; CI runs .ci/run, which calls them.

GO       ?= go
TOOLS    := $(GO) tool -modfile=tools/go.mod
BIN      := bin/confetti
TIMEOUT  ?= 15m

.PHONY: build dev test e2e bench proto proto-check lint

build:
	$(GO) build -o $(BIN) ./cmd/confetti

dev: build
	$(BIN) dev

test:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

# The real binary, run the way the README runs it (slower, so not in test).
e2e:
	$(GO) test -count=1 -timeout $(TIMEOUT) -tags e2e -run '^TestE2E' ./e2e/...

# Benchmarks measure and print; see the README for what each reports.
bench:
	$(GO) test -v -run '^$$' -bench . -benchtime 1x -timeout 60m ./bench/...

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
