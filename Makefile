# molecule-agent — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO      ?= go
PKGS    := ./...
BIN     := bin

.PHONY: help build agent controlplane cloudflared deb run test lint fmt fuzz screenshot bench bench-agent bench-cp bench-containers bench-boot clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: agent controlplane ## build bin/molecule-agent and bin/molecule-controlplane

agent: ## build bin/molecule-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/molecule-agent ./agent/cmd/molecule-agent

controlplane: ## build bin/molecule-controlplane
	@if [ -d controlplane/cmd/molecule-controlplane ]; then \
		CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/molecule-controlplane ./controlplane/cmd/molecule-controlplane; fi

cloudflared: $(BIN)/cloudflared ## build bin/cloudflared from the version pinned in packaging/cloudflared

$(BIN)/cloudflared: packaging/cloudflared/go.mod packaging/cloudflared/go.sum packaging/cloudflared/build.sh
	packaging/cloudflared/build.sh $(BIN)/cloudflared

deb: agent cloudflared ## build dist/molecule-agent_<version>_<arch>.deb with nfpm
	packaging/deb/build.sh $(VERSION)

run: build ## the whole system on this machine: control plane on SQLite + one agent supervising example units
	./packaging/dev/run.sh

test: lint cloudflared ## all tests: go test -race ./... plus the slow and privileged ones
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

lint: ## go mod tidy -diff, gofmt, go vet, staticcheck (pinned as a go tool)
	@$(GO) mod tidy -diff || { echo 'go.mod/go.sum not tidy: run go mod tidy'; exit 1; }
	@out=$$(gofmt -l agent bootstrap controlplane packaging 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

fmt: ## gofmt -w
	gofmt -w agent bootstrap controlplane packaging

fuzz: ## run every fuzzer for 20 s
	@for p in $$(grep -rl --include='*_test.go' '^func Fuzz' agent bootstrap controlplane | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$p/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s ./$$p || exit 1; done; done

screenshot: ## refresh controlplane/dashboard/testdata/screenshot.png (headless Chromium)
	UPDATE_SCREENSHOT=1 $(GO) test -count=1 -run TestDashboardInChromium ./controlplane/dashboard

bench: bench-agent bench-cp bench-containers bench-boot ## measure the numbers of design.md §4 (needs root and Docker; see README "Performance")

bench-agent: agent cloudflared ## agent RSS (idle and tenant-shaped), start → units started, crash → restart, cloudflared restart
	$(GO) run ./agent/cmd/agent-bench --agent $(BIN)/molecule-agent --cloudflared $(BIN)/cloudflared
	$(GO) test -count=1 -run '^$$' -bench BenchmarkTenantRSS -benchtime 1x ./agent/cmd/molecule-agent | grep MiB-rss

bench-cp: controlplane ## control plane: heartbeats/s, latency, transactions per flush, detection (SQLite and PostgreSQL)
	$(GO) run ./controlplane/cmd/cp-bench --binary $(BIN)/molecule-controlplane

bench-containers: ## image update downtime and desired-state → new version ready (real Docker)
	$(GO) test -count=1 -run '^$$' -bench BenchmarkUpdate -benchtime 10x ./agent/container/

bench-boot: ## bootstrap start → agent registered, inside a systemd-nspawn host
	$(GO) test -count=1 -run TestBootInNspawn -v ./bootstrap/boottest | grep BENCH

clean: ## remove build output
	rm -rf $(BIN) dist
