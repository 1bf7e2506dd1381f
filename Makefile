# Thin targets over the go tool; CI runs .ci/run, which calls them.

GO       ?= go
TOOLS    := $(GO) tool -modfile=tools/go.mod
BIN      := bin/confetti
TIMEOUT  ?= 15m

.PHONY: build dev test e2e etcd-compat chaos chaos-long bench bench-quick proto proto-check lint etcd images image-confetti image-etcd chart-test rules-test

# -buildvcs=auto stamps the VCS revision that 'confetti version' prints,
# whatever GOFLAGS says, whenever the tree is a checkout.
build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/confetti

dev: build
	$(BIN) dev

test:
	$(GO) test -race -count=1 -timeout $(TIMEOUT) ./...

# The real binary, run the way the README runs it (slower, so not in test).
e2e: etcd
	$(GO) test -count=1 -timeout $(TIMEOUT) -tags e2e -run '^TestE2E' ./e2e/...

# Clients nobody here wrote against confetti dev's etcd front door: the
# real etcdctl, etcd's benchmark tool, clientv3 programs and
# lua-resty-etcd's HTTP requests.
etcd-compat: build etcd bin/etcd-benchmark
	$(GO) test -count=1 -timeout $(TIMEOUT) -tags etcdcompat ./etcdcompat/...

# Fault scenarios against the deployment as processes (README, Chaos):
# reports in build/chaos/<scenario>-seed<n>/. chaos-long runs every
# scenario over more seeds with its fault schedule stretched.
# bin/confetti-plant carries the planted bugs of internal/plant (the chaos
# suite shows each is caught); no other build has them.
CHAOS_OUT ?= $(CURDIR)/build/chaos

chaos: build etcd bin/confetti-plant
	CHAOS_OUT=$(CHAOS_OUT) $(GO) test -count=1 -timeout 30m -tags chaos ./chaos/

chaos-long: build etcd
	CHAOS_OUT=$(CHAOS_OUT) CHAOS_SEEDS=$${CHAOS_SEEDS:-5} CHAOS_SCALE=$${CHAOS_SCALE:-3} $(GO) test -count=1 -timeout 6h -tags chaos -run '^TestChaos' ./chaos/

.PHONY: bin/confetti-plant
bin/confetti-plant:
	$(GO) build -tags chaosplant -o $@ ./cmd/confetti

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

# etcd v3.7.3 (server, etcdctl, etcdutl) for this host, built from etcd's
# Go modules by the wrapper module deploy/etcd: the containers, the chaos
# suite and the etcd-compat tests run the real etcd binaries.
ETCD_BIN := bin/etcd bin/etcdctl bin/etcdutl bin/etcd-probe

etcd: $(ETCD_BIN)

$(ETCD_BIN): deploy/etcd/go.mod deploy/etcd/go.sum deploy/etcd/main.go deploy/etcd/probe/main.go
	cd deploy/etcd && CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcd . \
		&& CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcd-probe ./probe \
		&& CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcdctl go.etcd.io/etcd/etcdctl/v3 \
		&& CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcdutl go.etcd.io/etcd/etcdutl/v3

# etcd's benchmark tool, from the wrapper module deploy/etcd-benchmark.
bin/etcd-benchmark: deploy/etcd-benchmark/go.mod deploy/etcd-benchmark/go.sum
	cd deploy/etcd-benchmark && CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/etcd-benchmark go.etcd.io/etcd/v3/tools/benchmark

# Images FROM scratch of static binaries (no image can be pulled here):
# confetti/confetti:$(IMAGE_TAG) and confetti/etcd:$(ETCD_TAG).
IMAGE_TAG ?= local
ETCD_TAG  := v3.7.3
CA_CERTS  ?= /etc/ssl/certs/ca-certificates.crt

images: image-confetti image-etcd

image-confetti:
	rm -rf build/images/confetti && mkdir -p build/images/confetti
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -o build/images/confetti/confetti ./cmd/confetti
	cp $(CA_CERTS) build/images/confetti/ca-certificates.crt
	mkdir -p build/images/confetti/data
	docker build -q -t confetti/confetti:$(IMAGE_TAG) -f deploy/images/confetti.Dockerfile build/images/confetti

image-etcd: etcd
	rm -rf build/images/etcd && mkdir -p build/images/etcd
	cp $(ETCD_BIN) build/images/etcd/
	cp $(CA_CERTS) build/images/etcd/ca-certificates.crt
	mkdir -p build/images/etcd/data
	docker build -q -t confetti/etcd:$(ETCD_TAG) -f deploy/images/etcd.Dockerfile build/images/etcd

# The compose cluster (deploy/compose): make up builds the images and
# starts it, make down stops it and removes its containers and networks,
# make down-volumes also its data and keys.
COMPOSE := docker-compose -p $${COMPOSE_PROJECT_NAME:-confetti} -f deploy/compose/docker-compose.yml --env-file deploy/compose/.env

.PHONY: up down down-volumes compose-e2e

up: images
	deploy/compose/up.sh

down:
	$(COMPOSE) down --remove-orphans

down-volumes:
	$(COMPOSE) down --remove-orphans --volumes
	rm -rf deploy/compose/.keys

# The compose cluster end to end (e2e/compose_test.go): images, up, the
# tour, faults, backup and restore, down; under 10 minutes on 2 cores.
compose-e2e: images
	$(GO) test -count=1 -timeout 20m -tags 'e2e compose' -run '^TestComposeEndToEnd$$' -v ./e2e/
