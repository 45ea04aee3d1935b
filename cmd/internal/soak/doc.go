// Package soak runs a real director for minutes under a simulated federation
// and checks that it holds steady: 1,000 envoys heartbeating over gRPC, a
// stream of job submissions, downloads and deletions through fladmin, and
// the director's memory and goroutines sampled through --pprof-listen. Its
// one test is behind the soak build tag, so `go test ./...` never runs it;
// `make soak` does (SOAK_DURATION=3m by default). The package has only tests.
package soak
