package server

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki/pkitest"
)

func TestLoopbackRule(t *testing.T) {
	tests := []struct {
		grpc, admin string
		metrics     string
		insecure    bool
		ok          bool
	}{
		{"127.0.0.1:1", "127.0.0.1:2", "", false, true},
		{"[::1]:1", "localhost:2", "", false, true},
		{"0.0.0.0:1", "127.0.0.1:2", "", false, false},
		{"127.0.0.1:1", "10.0.0.1:2", "", false, false},
		{"0.0.0.0:1", "0.0.0.0:2", "", true, true},
		{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", false, true},
		{"127.0.0.1:1", "127.0.0.1:2", "0.0.0.0:3", false, false},
		{"127.0.0.1:1", "127.0.0.1:2", "0.0.0.0:3", true, true},
	}
	for _, tt := range tests {
		c := Config{GRPCListen: tt.grpc, AdminListen: tt.admin, MetricsListen: tt.metrics, Insecure: tt.insecure}
		if err := c.Check(); (err == nil) != tt.ok {
			t.Errorf("%s %s %q insecure=%v: got %v, want ok=%v", tt.grpc, tt.admin, tt.metrics, tt.insecure, err, tt.ok)
		}
	}
}

// TestWebListenRule: without TLS the console is held to loopback even
// with --insecure; a wildcard address needs --web-url for its links.
func TestWebListenRule(t *testing.T) {
	tlsCfg := &tls.Config{}
	tests := []struct {
		web, url string
		tls      *tls.Config
		insecure bool
		want     string // in the error; "" for none
	}{
		{"127.0.0.1:8080", "", nil, false, ""},
		{"localhost:0", "", nil, false, ""},
		{"10.0.0.1:8080", "", nil, false, "--web-listen 10.0.0.1:8080 is not a loopback address"},
		{"0.0.0.0:8080", "", nil, true, "--insecure does not cover it"},
		{"10.0.0.1:8443", "", tlsCfg, false, ""},
		{"0.0.0.0:8443", "", tlsCfg, false, "give --web-url"},
		{"[::]:8443", "", tlsCfg, false, "give --web-url"},
		{":8443", "https://director.example.org:8443", tlsCfg, false, ""},
		{"nonsense", "", nil, false, "--web-listen"},
	}
	for _, tt := range tests {
		c := Config{GRPCListen: "127.0.0.1:1", AdminListen: "127.0.0.1:2", WebListen: tt.web, WebURL: tt.url, TLS: tt.tls, Insecure: tt.insecure}
		err := c.Check()
		if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("--web-listen %s --web-url %q tls=%v insecure=%v: got %v, want %q", tt.web, tt.url, tt.tls != nil, tt.insecure, err, tt.want)
		}
	}
}

// TestConsoleLogin serves a director with a console: console_login on the
// admin port returns a link to it, which logs a browser in once.
func TestConsoleLogin(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	lis, adminLis, webLis := pkitest.Listen(t, nil), pkitest.Listen(t, nil), pkitest.Listen(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, d, Config{WebListen: "127.0.0.1:0", WebListener: webLis}, lis, adminLis)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := &adminproto.Client{Addr: adminLis.Addr().String(), Timeout: 10 * time.Second}
	reply, err := c.Do(context.Background(), adminproto.NewRequest(api.CmdConsoleLogin))
	if err != nil {
		t.Fatal(err)
	}
	link, _ := reply.Meta[api.MetaURL].(string)
	if reply.Status() != adminproto.StatusOK || !strings.HasPrefix(link, "http://"+webLis.Addr().String()+"/login?token=") {
		t.Fatalf("console_login: %s %q, link %q", reply.Status(), reply.Info(), link)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for i, want := range []int{http.StatusSeeOther, http.StatusUnauthorized} {
		resp, err := noRedirect.Get(link)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("use %d of the link: %d, want %d", i+1, resp.StatusCode, want)
		}
	}
}
