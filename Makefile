# molecule-agent — the front door. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO      ?= go
PKGS    := ./...
BIN     := bin

.PHONY: help build agent controlplane cloudflared run test test-unit lint fmt bench clean

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

run: build ## the whole system on this machine: control plane on SQLite + one agent supervising example units
	./packaging/dev/run.sh

test: lint cloudflared ## all tests: go test -race ./... plus the slow and privileged ones
	$(GO) test -race -count=1 -timeout 30m $(PKGS)

test-unit: ## fast tests only (no Docker, root or PostgreSQL needed)
	$(GO) test -race -short -count=1 $(PKGS)

lint: ## gofmt, go vet, staticcheck (pinned as a go tool)
	@out=$$(gofmt -l agent bootstrap controlplane packaging 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) tool staticcheck $(PKGS)

fmt: ## gofmt -w
	gofmt -w agent bootstrap controlplane packaging

bench: build cloudflared ## measure the numbers of design.md §4 (see README "Performance")
	$(GO) run ./agent/cmd/agent-bench --agent $(BIN)/molecule-agent

clean: ## remove build output
	rm -rf $(BIN) dist
