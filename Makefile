# fedplane Makefile. Run `make` or `make help` for the list of targets.

MODULE              := github.com/fedplane/fedplane
VERSION             ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS             := -X $(MODULE)/cmd/internal/cli.Version=$(VERSION)
BINARIES            := director envoy fladmin
# The image `make docker` builds, tagged with VERSION and latest.
IMAGE               ?= fedplane

TOOLS_BIN           := $(CURDIR)/.tools/bin
PROTOC_GEN_GO       := google.golang.org/protobuf/cmd/protoc-gen-go
PROTOC_GEN_GO_VER   := v1.36.12
PROTOC_GEN_GRPC     := google.golang.org/grpc/cmd/protoc-gen-go-grpc
PROTOC_GEN_GRPC_VER := v1.6.2
# staticcheck 2026.2.2 (module version v0.8.2), the newest release when pinned.
# A release understands the Go versions out before it: move it with go.mod's.
STATICCHECK         := honnef.co/go/tools/cmd/staticcheck
STATICCHECK_VER     := v0.8.2
# The protoc release the checked-in code was generated with (Debian bookworm's
# protobuf-compiler). Another release only changes the version comment in the
# generated files, but that is enough to make generate-check fail.
PROTOC_VER          := 3.21.12
PROTO_FILES         := $(wildcard api/openfl/protocols/*.proto api/fedplane/protocols/*.proto)

TESTFLAGS           ?=
FUZZTIME            ?= 30s
BENCHFLAGS          ?=
SOAK_DURATION       ?= 3m

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help build docker test test-python vet staticcheck fmt-check tools generate generate-check bench bench-go fuzz soak check demo demo-digits clean

help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\nTargets:\n"} \
		/^[a-zA-Z0-9_.-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/director, bin/envoy and bin/fladmin (VERSION=... to override).
	@mkdir -p bin
	@set -e; for b in $(BINARIES); do \
		echo "go build -o bin/$$b ./cmd/$$b"; \
		go build -ldflags "$(LDFLAGS)" -o bin/$$b ./cmd/$$b; \
	done

docker: ## Build the container image (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# test starts a throwaway PostgreSQL cluster (.ci/postgres.sh) for the
# store's tests on that backend when FEDPLANE_TEST_POSTGRES is unset and
# Debian's server is installed; without either, those tests skip.
test: ## Run all tests with the race detector (TESTFLAGS=... for extra flags), on SQLite and PostgreSQL.
	@if [ -n "$$FEDPLANE_TEST_POSTGRES" ]; then \
		echo "go test -race $(TESTFLAGS) ./... (PostgreSQL: FEDPLANE_TEST_POSTGRES)"; \
		go test -race $(TESTFLAGS) ./...; \
	elif ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then \
		dir=$$(mktemp -d); \
		trap '.ci/postgres.sh stop "$$dir"; rm -rf "$$dir"' EXIT; \
		env=$$(.ci/postgres.sh start "$$dir") || exit 1; \
		eval "$$env"; \
		echo "go test -race $(TESTFLAGS) ./... (PostgreSQL: a throwaway cluster in $$dir)"; \
		go test -race $(TESTFLAGS) ./...; \
	else \
		echo "PostgreSQL is not installed (apt-get install postgresql): the PostgreSQL half of the tests skips"; \
		go test -race $(TESTFLAGS) ./...; \
	fi

# The python3 that has numpy: Debian's python3-numpy serves /usr/bin/python3,
# which need not be the first python3 in PATH.
PYTHON ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy' 2>/dev/null && { echo $$p; break; }; done)

test-python: ## Run the tests of the Python training helper (python/) with a python3 that has numpy.
	@if [ -z "$(PYTHON)" ]; then echo "no python3 with numpy: install python3-numpy (apt) or set PYTHON=..."; exit 1; fi
	$(PYTHON) -m unittest discover -s python/tests

vet: ## Run go vet over the whole module.
	go vet ./...

staticcheck: ## Run staticcheck (pinned, installed into .tools/bin) over the whole module, soak test included.
	@mkdir -p $(TOOLS_BIN)
	@if ! $(TOOLS_BIN)/staticcheck -version 2>/dev/null | grep -q '($(patsubst v%,%,$(STATICCHECK_VER)))$$'; then \
		echo "go install $(STATICCHECK)@$(STATICCHECK_VER)"; \
		GOBIN=$(TOOLS_BIN) go install $(STATICCHECK)@$(STATICCHECK_VER); \
	fi
	$(TOOLS_BIN)/staticcheck -tags soak ./...

fmt-check: ## Fail, listing the files, if any .go file is not gofmt-formatted.
	@files=$$(find . -path ./.tools -prune -o -path ./.git -prune -o -name '*.go' -print | xargs -r gofmt -l); \
	if [ -n "$$files" ]; then \
		echo "these files are not gofmt-formatted (run gofmt -w):"; echo "$$files"; exit 1; \
	fi

tools: ## Install pinned protoc-gen-go / protoc-gen-go-grpc into .tools/bin, and protoc via apt if missing.
	@mkdir -p $(TOOLS_BIN)
	@if ! $(TOOLS_BIN)/protoc-gen-go --version 2>/dev/null | grep -q '$(PROTOC_GEN_GO_VER)$$'; then \
		echo "go install $(PROTOC_GEN_GO)@$(PROTOC_GEN_GO_VER)"; \
		GOBIN=$(TOOLS_BIN) go install $(PROTOC_GEN_GO)@$(PROTOC_GEN_GO_VER); \
	fi
	@if ! $(TOOLS_BIN)/protoc-gen-go-grpc --version 2>/dev/null | grep -q '$(patsubst v%,%,$(PROTOC_GEN_GRPC_VER))$$'; then \
		echo "go install $(PROTOC_GEN_GRPC)@$(PROTOC_GEN_GRPC_VER)"; \
		GOBIN=$(TOOLS_BIN) go install $(PROTOC_GEN_GRPC)@$(PROTOC_GEN_GRPC_VER); \
	fi
	@if ! command -v protoc >/dev/null 2>&1; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "error: protoc is not installed and apt-get is unavailable;"; \
			echo "       install protoc $(PROTOC_VER) (with the google/protobuf/*.proto includes) by hand"; \
			exit 1; \
		fi; \
		echo "protoc missing: installing protobuf-compiler and libprotobuf-dev with apt-get"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q protobuf-compiler libprotobuf-dev; \
	fi
	@if ! protoc --version | grep -q ' $(PROTOC_VER)$$'; then \
		echo "warning: $$(protoc --version) is not libprotoc $(PROTOC_VER); generated headers will differ"; \
	fi

generate: tools ## Regenerate api/{basepb,directorpb,aggregatorpb,logspb,transferspb} from api/openfl/protocols/*.proto and api/fedplane/protocols/*.proto.
	PATH=$(TOOLS_BIN):$$PATH protoc -I api \
		--go_out=. --go_opt=module=$(MODULE) \
		--go-grpc_out=. --go-grpc_opt=module=$(MODULE) \
		$(PROTO_FILES)

generate-check: generate ## Fail if the generated code under api/ differs from what is committed.
	@if ! git diff --quiet --exit-code -- api/ || [ -n "$$(git status --porcelain -- api/)" ]; then \
		git status --short -- api/; \
		echo "generated code is stale: run make generate and commit"; \
		exit 1; \
	fi

bench: build ## Measure every figure against its floor in one table, see BENCHMARKS.md (BENCHFLAGS=-quick for a smoke run; FEDPLANE_TEST_POSTGRES adds the PostgreSQL figures).
	go run ./cmd/fedbench -bin bin $${FEDPLANE_TEST_POSTGRES:+-postgres "$$FEDPLANE_TEST_POSTGRES"} $(BENCHFLAGS)

bench-go: ## Run the Go benchmarks (no tests) with memory statistics.
	go test -run '^$$' -bench . -benchmem ./...

fuzz: ## Run every Fuzz target in the tree for FUZZTIME each (default 30s).
	@set -e; \
	list=$$(go test -run '^$$' -list '^Fuzz' ./...); \
	targets=$$(printf '%s\n' "$$list" | awk '/^Fuzz/ {f[n++] = $$1; next} \
		/^ok[ \t]/ {for (i = 0; i < n; i++) print $$2, f[i]; n = 0; next} {n = 0}'); \
	if [ -z "$$targets" ]; then echo "no fuzz targets exist yet"; exit 0; fi; \
	printf '%s\n' "$$targets" | while read -r pkg fn; do \
		echo "fuzzing $$pkg $$fn for $(FUZZTIME)"; \
		go test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg </dev/null; \
	done

soak: ## Soak a real director for SOAK_DURATION (default 3m): 1,000 simulated envoys, jobs, RSS and goroutine checks.
	SOAK_DURATION=$(SOAK_DURATION) go test -tags soak -run TestSoak -v -timeout 20m ./cmd/internal/soak/

check: fmt-check vet staticcheck generate-check test test-python ## Run all CI checks.

demo: build ## Run a director and three envoys training examples/logreg for 10 rounds (KEEP=1 keeps the workspace).
	bash examples/demo.sh

demo-digits: build ## Train examples/digits (PyTorch, scikit-learn's digits) on three envoys; federated vs central accuracy.
	bash examples/digits/run.sh

clean: ## Remove bin/ and .tools/.
	rm -rf bin .tools
