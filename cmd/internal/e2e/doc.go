// Package e2e tests fedplane as users run it: it builds the real director,
// envoy and fladmin binaries, starts them as processes on 127.0.0.1 (the
// director on ports the kernel picks, which its start-up line reports), and
// asserts on what they print, answer and leave on disk. The package has only
// tests.
package e2e
