// Package scrape serves a Prometheus registry over plain HTTP with the two
// probes every fedplane program answers the same way: /metrics, /healthz
// (200 while the process serves HTTP at all) and /readyz (200 when ready,
// 503 with the reason otherwise). The director and the envoy both serve
// it (--metrics-listen), so it lives beside the other pieces both ends
// share; it is apart from package api so that what imports the wire
// vocabulary does not link the Prometheus client.
package scrape

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fedplane/fedplane/api"
)

// stopGrace is how long a stopping metrics server lets a scrape in flight
// finish.
const stopGrace = time.Second

// readHeaderTimeout drops a client that does not finish its request's
// headers: the port is unauthenticated.
const readHeaderTimeout = 10 * time.Second

// Handler serves /metrics from reg, /healthz and /readyz, which answers
// 503 with ready's error while ready returns one.
func Handler(reg prometheus.Gatherer, ready func(context.Context) error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// Serve serves h on lis until ctx ends, then shuts the server down and
// returns once it has stopped. It owns lis. The error is nil unless
// serving failed. It logs "metrics serving" with the bound address
// (api.LogAddr), which tests and scripts read.
func Serve(ctx context.Context, lis net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info(ServingMsg, api.LogAddr, lis.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("metrics serve: %w", err)
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	if err := srv.Shutdown(stopCtx); err != nil {
		srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics serve: %w", err)
	}
	return nil
}

// ServingMsg is the message of the line Serve logs once it listens.
const ServingMsg = "metrics serving"

// BuildInfo is a gauge of value 1 named prefix+"build_info" whose labels
// say which build runs: Prometheus's convention for joining a version to
// other series.
func BuildInfo(prefix, help, version string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: prefix + "build_info", Help: help,
		ConstLabels: prometheus.Labels{"version": version},
	})
	g.Set(1)
	return g
}
