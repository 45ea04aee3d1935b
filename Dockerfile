# syntax=docker/dockerfile:1
#
# fedplane's director, envoy and fladmin in one small image: static Go
# binaries (no cgo: modernc's SQLite is pure Go) on distroless's static
# base, running as an unprivileged user.
#
#   make docker                       # or: docker build --build-arg VERSION=$(git describe --tags --always) -t fedplane .
#
# The director (the default command) listens on all addresses with mutual
# TLS; mount the federation's PKI (director pki init / issue) and a volume
# for its state:
#
#   docker run -d -p 50051:50051 -p 8003:8003 \
#     -v fedplane-data:/var/lib/fedplane -v "$PWD/pki:/etc/fedplane/pki:ro" fedplane
#
# Or a config file of your own, in place of the default command's flags:
#
#   docker run ... -v "$PWD/director.yaml:/etc/fedplane/director.yaml:ro" fedplane \
#     serve --config /etc/fedplane/director.yaml
#
# An envoy from the same image, the shard mounted read-only. The container
# is the training command's isolation: the image has no bubblewrap and its
# user is not root, so its envoy.yaml must set neither sandbox nor run-as.
#
#   docker run -d --entrypoint /usr/local/bin/envoy \
#     -v envoy-work:/var/lib/fedplane -v "$PWD/shard:/srv/data/shard:ro" \
#     -v "$PWD/envoy.yaml:/etc/fedplane/envoy.yaml:ro" -v "$PWD/pki:/etc/fedplane/pki:ro" \
#     fedplane start --config /etc/fedplane/envoy.yaml --work-dir /var/lib/fedplane
#
# A training command needs its interpreter (python3 for examples/logreg),
# which this image lacks: build an envoy image FROM one that has it and
# COPY --from=fedplane /usr/local/bin/envoy /usr/local/bin/envoy.

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first, so that a change to the code does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The Makefile's version stamp; .git is not in the build context, so pass
# it: --build-arg VERSION=$(git describe --tags --always --dirty).
ARG VERSION=dev
# CGO_ENABLED=0: fully static binaries, which run on an image without libc.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-X github.com/fedplane/fedplane/cmd/internal/cli.Version=${VERSION}" \
      -o /out/ ./cmd/director ./cmd/envoy ./cmd/fladmin \
 && mkdir -p /out/data

# distroless's static base: CA certificates, tzdata and /etc/passwd with
# user nonroot (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot AS run
COPY --from=build /out/director /out/envoy /out/fladmin /usr/local/bin/
# The state dir, owned by the user the programs run as; a named volume
# mounted there starts with this owner.
COPY --from=build --chown=65532:65532 /out/data /var/lib/fedplane
USER 65532:65532
WORKDIR /var/lib/fedplane
VOLUME ["/var/lib/fedplane"]
# The director's gRPC port (OpenFL services, envoys), its admin port
# (fladmin) and, if --metrics-listen is given, Prometheus's /metrics.
EXPOSE 50051 8003 9464
ENTRYPOINT ["/usr/local/bin/director"]
CMD ["serve", "--data-dir", "/var/lib/fedplane", \
     "--grpc-listen", "0.0.0.0:50051", "--admin-listen", "0.0.0.0:8003", \
     "--tls-ca", "/etc/fedplane/pki/ca.crt", "--tls-cert", "/etc/fedplane/pki/director.crt", \
     "--tls-key", "/etc/fedplane/pki/director.key", "--log-format", "json"]
