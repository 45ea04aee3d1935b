// Package scrape serves what fedplane's programs show on their plain HTTP
// side ports: a Prometheus registry with the two probes every program
// answers the same way, /metrics, /healthz (200 while the process serves
// HTTP at all) and /readyz (200 when ready, 503 with the reason otherwise),
// and the one way such a port is served and stopped (Serve), which the
// director's profile port uses too. The director and the envoy both serve
// metrics (--metrics-listen), so it lives beside the other pieces both
// ends share; it is apart from package api so that what imports the wire
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

// stopGrace is how long a stopping server lets a request in flight
// finish; a scrape is quick, and a CPU profile or trace runs for as long
// as it was asked to, so whatever is left after it is cut off.
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
// serving failed. It logs "<what> serving" (ServingMsg for "metrics") with
// the bound address (api.LogAddr), which tests and scripts read; what
// names the port in errors too.
func Serve(ctx context.Context, what string, lis net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info(what+" serving", api.LogAddr, lis.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("%s serve: %w", what, err)
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), stopGrace)
	defer cancel()
	if err := srv.Shutdown(stopCtx); err != nil {
		srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s serve: %w", what, err)
	}
	return nil
}

// ServingMsg is the message of the line Serve logs once a metrics port
// listens.
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
