package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// envoysReply is a list_envoys reply of n envoys shaped as the director
// sends it: a table item for FLARE's console and the envoys in meta.
func envoysReply(n int) *adminproto.Message {
	seen := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	rows := [][]string{{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"}}
	envoys := make([]any, 0, n)
	for i := range n {
		name := fmt.Sprintf("bench-envoy-%05d", i)
		envoys = append(envoys, map[string]any{
			"name": name, "online": true, "lastSeen": seen, "experiment": "", "experimentRunning": false,
			"samples": 1000, "shard": "fedbench simulated shard", "sampleShape": []string{"28", "28"},
			"targetShape": []string{"1"}, "registeredAt": seen,
		})
		rows = append(rows, []string{name, "true", seen.Format(time.RFC3339), "", "1000", "fedbench simulated shard"})
	}
	return &adminproto.Message{
		Data: []adminproto.Item{{Type: adminproto.TypeTable, Rows: rows}},
		Meta: map[string]any{"status": adminproto.StatusOK, "envoys": envoys},
	}
}

// BenchmarkListEnvoys is fladmin's side of `make bench` figure 6: one
// list-envoys of 10,000 envoys from a loopback server with a canned reply,
// through the real command, printing to io.Discard: "table" as on a pipe
// (tab-separated lines), "table-tty" as on a terminal (tablewriter's box).
func BenchmarkListEnvoys(b *testing.B) {
	srv := startFakeAdmin(b, envoysReply(10_000))
	for _, output := range []string{"table", "table-tty", "json", "yaml"} {
		tty := output == "table-tty"
		format := strings.TrimSuffix(output, "-tty")
		b.Run(output, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f := newFactory()
				f.stdout, f.stderr = io.Discard, io.Discard
				f.user = func() string { return "bench" }
				f.stdoutIsTerminal = func() bool { return tty }
				if code := cli.Main(newRootCmd(f), []string{"--addr", srv.addr, "-o", format, "list-envoys"}, io.Discard); code != 0 {
					b.Fatalf("list-envoys exit %s", strconv.Itoa(code))
				}
			}
		})
	}
}
