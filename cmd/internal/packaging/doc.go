// Package packaging tests what ships beside the binaries: the systemd units
// in examples/systemd (systemd-analyze verify, their hardening, and that
// their command lines still parse), the Dockerfile at the repository's root
// (parsed with BuildKit's own parser, no Docker engine needed), and the
// claim both make that a CGO_ENABLED=0 build is static. The package has only
// tests.
package packaging
