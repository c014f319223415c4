# kglb — make help lists the targets.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" failure when a -fuzztime duration ends while a
# worker is busy (go.dev/issue/75804, fixed in Go 1.27). About 30 s here.
FUZZTIME ?= 100000x
BENCHTIME ?= 1s
VMBENCHTIME ?= 1x
export PATH := $(GOBIN):$(PATH)

.PHONY: help build demo test deps lint unit fuzz check-examples vmtest debtest deb vmbench e2ebench bench clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/kglb
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o bin/kglb ./cmd/kglb

demo: build ## the main job: kglb in a VM balancing, failing over, withdrawing, reloading
	KGLB_BIN=bin/kglb VERSION=$(VERSION) ./scripts/demo.sh

test: deps lint unit fuzz check-examples vmtest debtest demo ## every test: lint, unit, fuzz, examples, BIRD, the VM, the .deb, the demo
	@echo "make test: all passed"

deps: ## install what the tests need (apt-get, Go module proxy)
	./scripts/deps.sh

lint: ## gofmt, go vet, staticcheck, go mod tidy
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags vmtest ./...
	staticcheck ./...
	staticcheck -tags vmtest ./...
	@# -diff changes nothing, so lint runs in parallel checkouts cannot disturb each other.
	@if ! $(GO) mod tidy -diff >/dev/null; then echo "go mod tidy would change go.mod/go.sum:"; $(GO) mod tidy -diff; exit 1; fi

unit: ## go test ./... on the host (BIRD tests included; needs root)
	$(GO) test -count=1 ./...

fuzz: ## fuzz config.Load for FUZZTIME executions
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 5s ./config

check-examples: build ## the examples validate and are formatted
	./bin/kglb validate examples/
	./bin/kglb fmt -check examples/

vmtest: ## kernel tests in a qemu VM booted from Debian's kernel
	./vmtest/run.sh test $(VM_PKGS)

deb: build ## build out/kglb_<version>_amd64.deb
	KGLB_BIN=bin/kglb VERSION=$(VERSION) ./scripts/deb.sh

debtest: build ## install the .deb in a booted Debian VM (systemd) and drive it
	KGLB_BIN=bin/kglb VERSION=$(VERSION) ./scripts/debtest.sh

vmbench: ## kernel benchmarks in the VM
	BENCHTIME=$(VMBENCHTIME) ./vmtest/run.sh bench $(VM_PKGS)

# E2E_N=200 make e2ebench for a quicker run (the default runs N=100, 200 and 1000); scripts/e2ebench.sh lists the knobs.
e2ebench: build ## kglb beside keepalived, end to end in the booted Debian VM (N=100, 200, 1000 services x 10 reals)
	KGLB_BIN=bin/kglb VERSION=$(VERSION) ./scripts/e2ebench.sh

# The host benchmarks run one package at a time (-p 1): two packages'
# benchmarks side by side on a 2-core machine time each other. Every part
# runs even when one before it failed, and the table shows what they printed;
# then make bench names the parts that failed (a VM that did not finish, a
# kernel bug report) and fails: a row can be missing or short of its rounds.
bench: ## one table of every benchmark (host and VM)
	@mkdir -p out
	@{ failed=""; \
	   $(GO) test -p 1 -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./... || failed="$$failed host"; \
	   BENCHTIME=$(VMBENCHTIME) ./vmtest/run.sh bench $(VM_PKGS) || failed="$$failed vmbench"; \
	   $(MAKE) --no-print-directory e2ebench || failed="$$failed e2ebench"; \
	   echo "$$failed" >out/bench.failed; } 2>&1 | tee out/bench.log | $(GO) run ./tools/benchtab -strict
	@failed="$$(cat out/bench.failed)"; if [ -n "$$failed" ]; then \
	   echo "make bench: these parts failed (see out/bench.log):$$failed"; exit 1; fi

clean: ## remove build output (keeps the VM cache)
	rm -rf bin out
