package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/scrape"
	"github.com/fedplane/fedplane/director/server"
)

// checkPprofListen refuses a profile address that is not on loopback: the
// profiles show the director's memory, goroutine stacks and command line to
// anyone who reaches the port, and the port has no authentication.
func checkPprofListen(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--pprof-listen %q: %w", addr, err)
	}
	if !server.IsLoopback(host) {
		return fmt.Errorf("--pprof-listen must be a loopback address: profiles expose internals (got %q)", addr)
	}
	return nil
}

// listenAndServePprof serves net/http/pprof's profiles (/debug/pprof/heap,
// /debug/pprof/goroutine, /debug/pprof/profile, ...) on addr, which must be a
// loopback address, until ctx ends. It then shuts the server down and returns
// once it has stopped; the error is nil unless it could not listen or
// serving failed.
func listenAndServePprof(ctx context.Context, addr string, log *slog.Logger) error {
	if err := checkPprofListen(addr); err != nil {
		return fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof listen: %w", err)
	}
	return servePprof(ctx, lis, log)
}

// servePprof serves the profiles on lis until ctx ends. It owns lis.
func servePprof(ctx context.Context, lis net.Listener, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return scrape.Serve(ctx, "pprof", lis, pprofMux(), log)
}

// pprofMux routes the profile handlers on a mux of its own. Importing
// net/http/pprof also registers them on http.DefaultServeMux, which fedplane
// never serves.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // heap, goroutine, allocs, block, mutex, ...
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
