package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/store"
)

// envoyPage is list_envoys' reply meta.
type envoyPage struct {
	Envoys    []api.Envoy `json:"envoys"`
	Total     int         `json:"total"`
	NextAfter string      `json:"nextAfter"`
}

func listPage(t *testing.T, c *adminproto.Client, command string) (envoyPage, *adminproto.Message) {
	t.Helper()
	reply := do(t, c, command)
	var p envoyPage
	if reply.Status() == adminproto.StatusOK {
		b, _ := json.Marshal(reply.Meta)
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
	}
	return p, reply
}

func TestListEnvoysPages(t *testing.T) {
	const n = 2500
	c, _ := mustServeAdmin(t, directortest.WithEnvoys(t, n), Config{})
	tests := []struct {
		name      string
		command   string
		wantFirst string
		wantLen   int
		wantNext  string
		wantErr   string
	}{
		{name: "default page", command: "list_envoys", wantFirst: "envoy-00000", wantLen: api.DefaultEnvoyPage, wantNext: "envoy-00999"},
		{name: "after a name", command: "list_envoys -a envoy-00999 -m 1000", wantFirst: "envoy-01000", wantLen: 1000, wantNext: "envoy-01999"},
		{name: "last page", command: "list_envoys -a envoy-01999 -m 1000", wantFirst: "envoy-02000", wantLen: 500},
		{name: "exactly the rest", command: "list_envoys -a envoy-01999 -m 500", wantFirst: "envoy-02000", wantLen: 500},
		{name: "after the last", command: "list_envoys -a envoy-02499"},
		{name: "after a name not registered", command: "list_envoys -a envoy-00999x -m 2", wantFirst: "envoy-01000", wantLen: 2, wantNext: "envoy-01001"},
		{name: "max zero", command: "list_envoys -m 0", wantErr: "-m 0: want 1 to 10000"},
		{name: "max too large", command: "list_envoys -m 10001", wantErr: "-m 10001"},
		{name: "stray argument", command: "list_envoys x", wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reply := listPage(t, c, tt.command)
			if tt.wantErr != "" {
				if reply.Status() != adminproto.StatusSyntaxError || !strings.Contains(reply.Info(), tt.wantErr) {
					t.Fatalf("got %s %q, want a syntax error naming %q", reply.Status(), reply.Info(), tt.wantErr)
				}
				return
			}
			if reply.Status() != adminproto.StatusOK {
				t.Fatalf("got %s %q", reply.Status(), reply.Info())
			}
			if p.Total != n || len(p.Envoys) != tt.wantLen || p.NextAfter != tt.wantNext {
				t.Fatalf("got total %d, %d envoys, nextAfter %q; want %d, %d, %q", p.Total, len(p.Envoys), p.NextAfter, n, tt.wantLen, tt.wantNext)
			}
			if tt.wantLen > 0 && p.Envoys[0].Name != tt.wantFirst {
				t.Fatalf("first: got %s, want %s", p.Envoys[0].Name, tt.wantFirst)
			}
		})
	}
}

// TestListEnvoysPageBytes registers envoys with long descriptions: a page
// stops at api.EnvoyPageBytes, however many envoys -m allows, and the
// pages still list every envoy once.
func TestListEnvoysPageBytes(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	// Descriptions at their cap: enough envoys to fill several pages.
	const n = 3 * api.EnvoyPageBytes / director.MaxShardDescription
	long := strings.Repeat("d", director.MaxShardDescription)
	for i := range n {
		if _, err := d.RegisterEnvoy(context.Background(), store.Envoy{Name: fmt.Sprintf("site-%05d", i), Description: long,
			SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := mustServeAdmin(t, d, Config{})
	seen, pages, after := 0, 0, ""
	for {
		command := "list_envoys -m 10000"
		if after != "" {
			command += " -a " + after
		}
		p, reply := listPage(t, c, command)
		if reply.Status() != adminproto.StatusOK {
			t.Fatalf("got %s %q", reply.Status(), reply.Info())
		}
		// Each envoy counts its description twice (JSON and table).
		if max := api.EnvoyPageBytes/(2*len(long)) + 1; len(p.Envoys) > max {
			t.Fatalf("page of %d envoys with 100 KiB descriptions, want at most %d", len(p.Envoys), max)
		}
		for i, e := range p.Envoys {
			if want := fmt.Sprintf("site-%05d", seen+i); e.Name != want {
				t.Fatalf("page %d envoy %d: got %s, want %s", pages, i, e.Name, want)
			}
		}
		seen += len(p.Envoys)
		pages++
		if p.NextAfter == "" {
			break
		}
		after = p.NextAfter
	}
	if seen != n || pages < 2 {
		t.Fatalf("listed %d envoys in %d pages, want %d in several", seen, pages, n)
	}
}
