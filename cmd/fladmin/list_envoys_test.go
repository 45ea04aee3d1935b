package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/admin"
	"github.com/fedplane/fedplane/director/directortest"
)

// mustServeDirectorAdmin serves a real director's admin port on loopback
// until the test ends.
func mustServeDirectorAdmin(t *testing.T, srv *admin.Server) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// TestListEnvoys100k lists a federation of 100,000 envoys through a real
// director's admin port: every envoy arrives once, in order, though one
// reply of them all would be over the exchange's limit. (-o json takes the
// same pages through printElements: TestPrintList.)
func TestListEnvoys100k(t *testing.T) {
	n := 100_000
	if raceEnabled {
		n = 25_000 // still three pages: the paging is what races could break
	}
	addr := mustServeDirectorAdmin(t, admin.New(directortest.WithEnvoys(t, n), admin.Config{}))

	// One reply of them all would be over the exchange's limit: a full
	// page's reply, as the director encodes it, times the pages.
	page, err := (&adminproto.Client{Addr: addr}).Do(context.Background(), adminproto.NewRequest(fmt.Sprintf("list_envoys -m %d", api.MaxEnvoyPage)))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := adminproto.EncodeMessage(page)
	if err != nil {
		t.Fatal(err)
	}
	if whole := len(doc) * (100_000 / api.MaxEnvoyPage); whole < adminproto.MaxTextSize {
		t.Fatalf("100,000 envoys would make a reply of about %d bytes, under the %d-byte limit: the test shows nothing", whole, adminproto.MaxTextSize)
	}

	out, stderr, code := runFladmin(t, addr, "list-envoys")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n+1 || !strings.HasPrefix(lines[0], "NAME\t") {
		t.Fatalf("got %d lines, want a header and %d envoys", len(lines), n)
	}
	for i, l := range lines[1:] {
		if want := fmt.Sprintf("envoy-%05d\t", i); !strings.HasPrefix(l, want) {
			t.Fatalf("line %d: got %.40q, want it to start %q", i+1, l, want)
		}
	}

}

// TestListEnvoysHostileCursor: a director whose nextAfter does not move
// forward, or is not a name, is an error, not a loop or a command of its
// choosing.
func TestListEnvoysHostileCursor(t *testing.T) {
	tests := []struct {
		name, next, want string
	}{
		{name: "does not move", next: "", want: ""},
		{name: "words", next: "x -m 1", want: "nextAfter"},
		{name: "path", next: "../x", want: "nextAfter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta := map[string]any{"envoys": []any{}}
			if tt.next != "" {
				meta["nextAfter"] = tt.next
			}
			srv := startFakeAdmin(t, ok(meta))
			_, stderr, code := runFladmin(t, srv.addr, "list-envoys")
			if tt.want == "" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				return
			}
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.want)
			}
		})
	}
	// A fake that always answers the same cursor: the second page would
	// ask again after the same name.
	srv := startFakeAdmin(t, ok(map[string]any{"envoys": []any{}, "nextAfter": "site-z"}))
	_, stderr, code := runFladmin(t, srv.addr, "list-envoys")
	if code != 1 || !strings.Contains(stderr, "does not move past") {
		t.Fatalf("repeating cursor: exit %d, stderr %q", code, stderr)
	}
}
