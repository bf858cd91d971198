# Sluice: the two commands a developer needs are `make dev` and `make test`.
GO ?= go
# -trimpath: builds do not depend on the checkout's directory, so a fresh
# clone (CI) and the generated-code check's copy reuse the build cache.
export GOFLAGS ?= -buildvcs=false -trimpath

.PHONY: dev test build services generate check-generated vet unit e2e bench

## dev: run everything in one process (migrations, demo tenant, token, GraphiQL)
dev: services
	$(GO) run ./cmd/sluice dev

## test: the whole suite (CI runs this); the generated-code check runs beside
## the tests, in a copy of the checkout. -parallel 4: most end-to-end tests
## spend their time waiting on their stack's processes (runs, timers), so
## four at a time on 2 cores keeps the CPU busy where Go's default (one per
## core) leaves it idle a third of the time.
test: services vet
	@./.ci/check-generated & gen=$$!; \
	$(GO) test -count=1 -parallel 4 -timeout 25m ./...; rc=$$?; \
	wait $$gen || rc=1; exit $$rc

build:
	$(GO) build -o bin/sluice ./cmd/sluice

services:
	./.ci/services

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

## generate: regenerate Ent, the GraphQL schema and gqlgen code
generate:
	$(GO) generate ./...

## check-generated: fail when `go generate ./...` changes committed code
check-generated:
	./.ci/check-generated

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: services
	$(GO) test -count=1 -parallel 4 -timeout 25m ./e2e

## bench: measure Sluice on this machine against its targets (BENCHMARKS.md); BENCH_FLAGS=--smoke for a quick check
bench: services
	$(GO) run ./cmd/sluice bench $(BENCH_FLAGS)
