# dcache build, demo and tests. `make demo` and `make test` install what they
# need on a fresh Debian machine (fuse3, fio) when it is missing.
GO      ?= go
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
BIN     := bin/dcache

.PHONY: all build deps demo test test-short bench crash-test clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

# System packages the tests and benchmarks use: fusermount3 (fuse3) for
# unprivileged mounts and clean unmounts, fio for the benchmark scripts.
deps:
	@if ! command -v fusermount3 >/dev/null 2>&1 || ! command -v fio >/dev/null 2>&1; then \
		echo "installing fuse3 and fio"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 fio >/dev/null; \
	fi

# Mount a demo directory on the embedded default configuration, write and
# read through it, remount and verify.
demo: deps build
	./$(BIN) demo

# The whole test suite: vet, unit tests, FUSE integration tests, crash tests,
# all under the race detector.
test: deps build
	$(GO) vet ./...
	DCACHE_TEST_BIN=$(CURDIR)/$(BIN) $(GO) test -race -timeout 60m ./...

test-short: build
	DCACHE_TEST_BIN=$(CURDIR)/$(BIN) $(GO) test -short ./...

# fio suite against dcache, the native directory and a FUSE passthrough.
bench: deps build
	scripts/bench.sh

# Kill -9 the daemon under load for a while and check every fsynced byte.
crash-test: deps build
	scripts/crash-test.sh

clean:
	rm -rf bin
