package main

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
)

func TestCheckPprofListen(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:6060", true},
		{"127.0.0.2:0", true},
		{"[::1]:6060", true},
		{"localhost:6060", true},
		{":6060", false}, // every interface
		{"0.0.0.0:6060", false},
		{"[::]:6060", false},
		{"10.1.2.3:6060", false},
		{"example.com:6060", false},
		{"127.0.0.1", false}, // no port
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			err := checkPprofListen(tt.addr)
			if (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "--pprof-listen") {
				t.Errorf("got %q, want it to name --pprof-listen", err)
			}
		})
	}
}

func TestServePprofRefusesNonLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Refused before listening: the call returns at once instead of serving
	// until ctx ends.
	err := listenAndServePprof(ctx, "0.0.0.0:0", nil)
	if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), "must be a loopback address") {
		t.Fatalf("got %v, want api.ErrInvalid naming the loopback rule", err)
	}
}

func TestListenAndServePprof(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- servePprof(ctx, lis, nil) }()

	base := "http://" + lis.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.HasPrefix(body, "goroutine profile: total ") {
		t.Fatalf("goroutine profile: got %d %.80q, want 200 starting with %q", code, body, "goroutine profile: total ")
	}
	if code, _ := get("/debug/pprof/heap?debug=1"); code != http.StatusOK {
		t.Errorf("heap profile: got %d, want 200", code)
	}
	// Only the profiles are served.
	if code, _ := get("/"); code != http.StatusNotFound {
		t.Errorf("/: got %d, want 404", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("servePprof after cancel: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("servePprof did not return within 5s of its context ending")
	}
	if _, err := http.Get(base + "/debug/pprof/"); err == nil {
		t.Error("the port still answers after servePprof returned")
	}
}
