# Sluice: the two commands a developer needs are `make dev` and `make test`.
GO ?= go
export GOFLAGS ?= -buildvcs=false

.PHONY: dev test build services generate check-generated vet unit e2e bench

## dev: run everything in one process (migrations, demo tenant, token, GraphiQL)
dev: services
	$(GO) run ./cmd/sluice dev

## test: the whole suite (CI runs this)
test: services vet check-generated
	$(GO) test -count=1 -parallel 4 -timeout 25m ./...

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
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  $(GO) generate ./... && \
	  test -z "$$(git status --porcelain -- ent graph gqlgen.yml)" || { git status --porcelain -- ent graph; echo "generated code is stale: run make generate and commit"; exit 1; }; \
	fi

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e: services
	$(GO) test -count=1 -parallel 4 -timeout 25m ./e2e

## bench: measure Sluice on this machine against its targets (BENCHMARKS.md); BENCH_FLAGS=--smoke for a quick check
bench: services
	$(GO) run ./cmd/sluice bench $(BENCH_FLAGS)
