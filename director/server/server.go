// Package server runs a director.Director with its adapters on their
// listeners: the OpenFL gRPC services (director/openfl) on the gRPC port
// and the admin channel (director/admin) on the admin port. It owns the
// order of a stop: drain the domain (long polls end), stop gRPC gracefully
// for a grace period and then cut off what is left, stop the admin
// listener, stop the domain's background work. With a web listener it
// also serves the read-only web console (director/web), whose event
// streams end at the drain.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/scrape"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/admin"
	"github.com/fedplane/fedplane/director/openfl"
	"github.com/fedplane/fedplane/director/web"
)

// Defaults of Config.
const (
	DefaultGRPCListen  = "127.0.0.1:50051"
	DefaultAdminListen = "127.0.0.1:8003"
	// DefaultStopGrace is how long a stop waits for in-flight RPCs and
	// admin exchanges before it cuts them off; long polls never finish by
	// themselves.
	DefaultStopGrace = 3 * time.Second
)

// Config configures where and how a director is served. Zero fields take
// the Default values.
type Config struct {
	GRPCListen  string
	AdminListen string
	// TLS, when set, serves both ports with mutual TLS (see pki.ServerTLS).
	TLS *tls.Config
	// Insecure allows serving without TLS on addresses other than loopback.
	Insecure bool
	// StopGrace bounds the graceful part of a stop.
	StopGrace time.Duration
	// Admin configures the admin channel; its TLS and StopGrace are taken
	// from this Config.
	Admin admin.Config
	// MetricsListen, when set, is where Run serves /metrics, /healthz and
	// /readyz over plain HTTP (see MetricsListener).
	MetricsListen string
	// MetricsListener, when set, is where Serve serves them; Serve owns
	// it. With it the gRPC calls are counted too.
	MetricsListener net.Listener
	// WebListen, when set, is where Run serves the web console (see
	// WebListener): HTTPS with TLS, else plain HTTP on loopback only.
	WebListen string
	// WebURL is the console's address as browsers reach it, which login
	// links start with; empty, it is made from the bound address (which
	// Check requires unless WebListen names a host).
	WebURL string
	// WebListener, when set, is where Serve serves the console; Serve owns
	// it.
	WebListener net.Listener
	// Web configures the console; its TLS and BaseURL are taken from this
	// Config.
	Web web.Config
}

func (c *Config) setDefaults() {
	if c.GRPCListen == "" {
		c.GRPCListen = DefaultGRPCListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	c.Admin.TLS, c.Admin.StopGrace = c.TLS, c.StopGrace
}

// Check refuses to serve without TLS anywhere but on loopback addresses,
// unless told Insecure. The error wraps api.ErrInvalid and names the flag.
func (c Config) Check() error {
	c.setDefaults()
	if c.TLS != nil || c.Insecure {
		return c.checkWeb()
	}
	addrs := []struct{ flag, addr string }{{"grpc-listen", c.GRPCListen}, {"admin-listen", c.AdminListen}}
	if c.MetricsListen != "" {
		// The metrics port is plain HTTP even with TLS set; without TLS
		// it is held to loopback like the others.
		addrs = append(addrs, struct{ flag, addr string }{"metrics-listen", c.MetricsListen})
	}
	if err := c.checkWeb(); err != nil {
		return err
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("%w: --%s %q: %w", api.ErrInvalid, a.flag, a.addr, err)
		}
		if !IsLoopback(host) {
			return fmt.Errorf("%w: --%s %s is not a loopback address and no TLS certificates are set: "+
				"give --tls-ca, --tls-cert and --tls-key (see `director pki`), or --insecure to serve in the clear anyway",
				api.ErrInvalid, a.flag, a.addr)
		}
	}
	return nil
}

// checkWeb holds --web-listen to loopback without TLS, whatever
// --insecure says: a session cookie in the clear on a network would let
// anyone who sees it read the federation. A wildcard address needs
// --web-url, as login links must name a host browsers reach.
func (c Config) checkWeb() error {
	if c.WebListen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.WebListen)
	if err != nil {
		return fmt.Errorf("%w: --web-listen %q: %w", api.ErrInvalid, c.WebListen, err)
	}
	if c.TLS == nil && !IsLoopback(host) {
		return fmt.Errorf("%w: --web-listen %s is not a loopback address and no TLS certificates are set: "+
			"the web console serves the network only with --tls-ca, --tls-cert and --tls-key (--insecure does not cover it)",
			api.ErrInvalid, c.WebListen)
	}
	if c.WebURL == "" && isWildcard(host) {
		return fmt.Errorf("%w: --web-listen %s listens on every address: give --web-url, the console's address as browsers reach it (e.g. https://director.example.org:8443), for the login links",
			api.ErrInvalid, c.WebListen)
	}
	return nil
}

// isWildcard reports whether host is empty or an unspecified address.
func isWildcard(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

// webURL is the console's base URL: WebURL, or made from the address lis
// is bound to.
func (c Config) webURL(lis net.Listener) string {
	if c.WebURL != "" {
		return c.WebURL
	}
	scheme := "http"
	if c.TLS != nil {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(c.WebListen)
	if err != nil || port == "0" || isWildcard(host) {
		return scheme + "://" + lis.Addr().String()
	}
	return scheme + "://" + c.WebListen
}

// IsLoopback reports whether host is "localhost" or a loopback address.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Run listens on the configured gRPC and admin addresses and serves d
// until ctx ends (see Serve).
func Run(ctx context.Context, d *director.Director, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Check(); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.GRPCListen)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		lis.Close()
		return fmt.Errorf("admin listen: %w", err)
	}
	if err := cfg.ListenSide(); err != nil {
		lis.Close()
		adminLis.Close()
		return err
	}
	return Serve(ctx, d, cfg, lis, adminLis)
}

// ListenSide opens the listeners of the side ports that are set: metrics
// and the web console, for Serve.
func (cfg *Config) ListenSide() error {
	var err error
	if cfg.MetricsListen != "" {
		if cfg.MetricsListener, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
	}
	if cfg.WebListen != "" {
		if cfg.WebListener, err = net.Listen("tcp", cfg.WebListen); err != nil {
			if cfg.MetricsListener != nil {
				cfg.MetricsListener.Close()
			}
			return fmt.Errorf("web listen: %w", err)
		}
	}
	return nil
}

// Serve serves d's gRPC services on lis and its admin channel on adminLis
// (if not nil), and runs d's background work, until ctx ends; then it
// stops in order (see the package comment). It owns both listeners and
// returns once everything it started is done. The caller closes d.
func Serve(ctx context.Context, d *director.Director, cfg Config, lis, adminLis net.Listener) error {
	cfg.setDefaults()
	log := d.Config().Logger
	ocfg := openfl.Config{TLS: cfg.TLS}
	if cfg.MetricsListener != nil {
		ocfg.Metrics = d.Prometheus()
	}
	s := openfl.NewServer(d, ocfg)
	if cfg.TLS == nil {
		log.Warn("serving without TLS: anyone who can reach the ports is trusted; use director pki and --tls-* beyond loopback")
	}
	adminAddr := "off"
	if adminLis != nil {
		adminAddr = adminLis.Addr().String()
	}
	var console *web.Server
	serving := []any{api.LogGRPC, lis.Addr().String(), api.LogAdmin, adminAddr}
	if cfg.WebListener != nil {
		wcfg := cfg.Web
		wcfg.TLS, wcfg.BaseURL = cfg.TLS, cfg.webURL(cfg.WebListener)
		console = web.New(d, wcfg)
		cfg.Admin.ConsoleLogin = console.Login
		serving = append(serving, api.LogWeb, cfg.WebListener.Addr().String())
	}
	// Tests and scripts read the bound addresses from this line.
	log.Info("director serving", serving...)

	// The admin port and the director's loops stop when Serve says, after
	// the drain and the gRPC server: not when ctx ends, which would race
	// the admin listener's clean return against ctx.Done below.
	loopCtx, stopLoop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { d.Run(loopCtx) })
	adminErr := make(chan error, 1)
	if adminLis != nil {
		srv := admin.New(d, cfg.Admin)
		wg.Go(func() { adminErr <- srv.Serve(loopCtx, adminLis) })
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(openfl.Listener(lis)) }()
	// Ready once the ports serve, until the drain.
	metricsErr := make(chan error, 1)
	if cfg.MetricsListener != nil {
		h := d.Prometheus().Handler(d.Ready)
		wg.Go(func() { metricsErr <- scrape.Serve(loopCtx, "metrics", cfg.MetricsListener, h, log) })
	}
	webErr := make(chan error, 1)
	if console != nil {
		wg.Go(func() { webErr <- console.Serve(loopCtx, cfg.WebListener) })
	}

	var err error
	select {
	case err = <-serveErr:
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			err = errors.New("grpc server stopped unexpectedly")
		}
		err = fmt.Errorf("grpc serve: %w", err)
		d.Drain()
	case err = <-adminErr:
		// The admin listener never stops by itself: treat it as fatal.
		if err == nil {
			err = errors.New("admin listener stopped unexpectedly")
		}
		d.Drain()
		stopWithGrace(s, cfg.StopGrace)
		<-serveErr
	case err = <-metricsErr:
		d.Drain()
		stopWithGrace(s, cfg.StopGrace)
		<-serveErr
	case err = <-webErr:
		d.Drain()
		stopWithGrace(s, cfg.StopGrace)
		<-serveErr
	case <-ctx.Done():
		log.Info("director stopping")
		d.Drain()
		stopWithGrace(s, cfg.StopGrace)
		<-serveErr
	}
	stopLoop()
	wg.Wait()
	if err == nil {
		select {
		case err = <-adminErr:
		default:
		}
	}
	if err == nil {
		select {
		case err = <-metricsErr:
		default:
		}
	}
	if err == nil {
		select {
		case err = <-webErr:
		default:
		}
	}
	return err
}

// stopWithGrace stops s gracefully, cutting off what is left after grace.
func stopWithGrace(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.Stop()
		<-done
	}
}
