// Package web serves the director's read-only web console: a page
// embedded in the binary (hand-written HTML, CSS and JavaScript, no build
// step and nothing fetched from elsewhere) and the JSON and Server-Sent
// Events API it reads: envoys, jobs, a job's aggregated metrics per round,
// and the federation's event stream, which keeps the page live.
//
// The console has the admin port's identities and roles: a browser that
// presents an admin certificate of the federation's CA (with TLS), or a
// session from a one-time login link that `fladmin console` prints
// (console_login). Every API request is authorized as the admin command
// it mirrors, through the domain's one authorization table.
package web

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
)

// Defaults and limits of the web listener.
const (
	// DefaultMaxStreams caps the event streams open at once, and
	// DefaultMaxStreamsPerCaller those of one caller (its tabs).
	DefaultMaxStreams          = 64
	DefaultMaxStreamsPerCaller = 8
	// DefaultStopGrace is how long requests in flight may finish once the
	// server stops; event streams end at the director's drain already.
	DefaultStopGrace = 3 * time.Second
	// heartbeat is how often an idle event stream sends a comment, so that
	// proxies and the browser know it is alive.
	heartbeat = 15 * time.Second
	// maxHeaderBytes bounds a request's header: a browser's fits easily.
	maxHeaderBytes = 16 << 10
)

// Config configures the console. Zero fields take the Default values.
type Config struct {
	// TLS, when set, is the director's server config: the console serves
	// HTTPS with its certificate and reads a client certificate of the
	// same CA, if the browser presents one.
	TLS *tls.Config
	// BaseURL is what login links start with, e.g.
	// "https://director.example.org:8443" (director serve --web-url).
	BaseURL string
	// MaxStreams and MaxStreamsPerCaller cap concurrent event streams.
	MaxStreams          int
	MaxStreamsPerCaller int
	StopGrace           time.Duration
}

// Server is the console of one director.
type Server struct {
	d      *director.Director
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	logins *logins
	mux    *http.ServeMux
	page   http.HandlerFunc // index.html

	mu       sync.Mutex
	streams  int            // event streams open
	byCaller map[string]int // event streams open per caller
}

// New returns the console of d.
func New(d *director.Director, cfg Config) *Server {
	if cfg.MaxStreams <= 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.MaxStreamsPerCaller <= 0 {
		cfg.MaxStreamsPerCaller = DefaultMaxStreamsPerCaller
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	now := d.Config().Now
	if now == nil {
		now = time.Now
	}
	log := d.Config().Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{d: d, cfg: cfg, log: log, now: now, logins: newLogins(now), byCaller: map[string]int{}}
	s.routes()
	return s
}

// Login issues a one-time login link for c, valid TokenTTL: console_login
// calls it for the admin it has identified.
func (s *Server) Login(c director.Caller) (url string, expires time.Time, err error) {
	if s.cfg.BaseURL == "" {
		return "", time.Time{}, fmt.Errorf("%w: the web console has no URL: set director serve --web-url", api.ErrUnavailable)
	}
	token, expires := s.logins.issue(c)
	return s.cfg.BaseURL + "/login?token=" + token, expires, nil
}

// TLSConfig is the console's server config made from the director's: the
// same certificate and CA, a client certificate verified if the browser
// presents one (a browser without one logs in with a link), and plain
// HTTP/1.1.
func TLSConfig(director *tls.Config) *tls.Config {
	c := director.Clone()
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.NextProtos = []string{"http/1.1"}
	return c
}

// Serve serves the console on lis (with TLS when configured) until ctx
// ends, then stops within the grace. It owns lis.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if s.cfg.TLS != nil {
		lis = tls.NewListener(lis, TLSConfig(s.cfg.TLS))
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("web console serving", api.LogAddr, lis.Addr().String())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("web serve: %w", err)
	case <-ctx.Done():
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), s.cfg.StopGrace)
	defer cancel()
	if err := srv.Shutdown(stopCtx); err != nil {
		srv.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("web serve: %w", err)
	}
	return nil
}

// securityHeaders are sent with every response: the page loads only its
// own files, is never framed, and leaks no URL (a login link) as a
// referrer.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
	"X-Content-Type-Options": "nosniff",
	"Referrer-Policy":        "no-referrer",
	"X-Frame-Options":        "DENY",
}

// ServeHTTP sets the security headers, refuses anything but GET, and
// routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for k, v := range securityHeaders {
		h.Set(k, v)
	}
	if r.Method != http.MethodGet {
		h.Set("Allow", http.MethodGet)
		http.Error(w, "the console is read-only: GET only", http.StatusMethodNotAllowed)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) routes() {
	m := http.NewServeMux()
	s.page = s.static("index.html", "text/html; charset=utf-8")
	m.HandleFunc("GET /{$}", s.index)
	m.HandleFunc("GET /app.js", s.static("app.js", "text/javascript; charset=utf-8"))
	m.HandleFunc("GET /app.css", s.static("app.css", "text/css; charset=utf-8"))
	m.HandleFunc("GET /login", s.login)
	m.HandleFunc("GET /api/whoami", s.api("", s.whoami))
	m.HandleFunc("GET /api/envoys", s.api(api.CmdListEnvoys, s.envoys))
	m.HandleFunc("GET /api/jobs", s.api(api.CmdListJobs, s.jobs))
	m.HandleFunc("GET /api/jobs/{id}", s.api(api.CmdGetJobMeta, s.job, api.CmdGetMetrics))
	m.HandleFunc("GET /api/events", s.api(api.CmdGetEvents, s.events))
	m.HandleFunc("GET /api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API: "+r.URL.Path)
	})
	m.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	})
	s.mux = m
}
