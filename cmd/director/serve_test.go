package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// TestServeUsage checks that flag values the director refuses exit 2
// before it opens anything.
func TestServeUsage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	base := []string{"serve", "--data-dir", data}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unknown flag", []string{"serve", "--grpc-lisen", "x"}, cli.ExitUsage, "unknown flag: --grpc-lisen"},
		{"arguments", []string{"serve", "now"}, cli.ExitUsage, `unknown command "now"`},
		{"unknown command", []string{"srv"}, cli.ExitUsage, `unknown command "srv"`},
		{"grpc address without port", []string{"--grpc-listen", "localhost"}, cli.ExitUsage, `--grpc-listen "localhost": want HOST:PORT`},
		{"admin address with a bad port", []string{"--admin-listen", "127.0.0.1:99999"}, cli.ExitUsage, `port "99999" is not a number from 0 to 65535`},
		{"one address for both ports", []string{"--grpc-listen", "127.0.0.1:7000", "--admin-listen", "127.0.0.1:7000"}, cli.ExitUsage, "both 127.0.0.1:7000"},
		{"empty sample shape dimension", []string{"--sample-shape", "28,,28"}, cli.ExitUsage, "--sample-shape"},
		{"trailing comma in target shape", []string{"--target-shape", "1,"}, cli.ExitUsage, "--target-shape"},
		{"bad duration", []string{"--health-check-period", "often"}, cli.ExitUsage, `invalid argument "often" for "--health-check-period"`},
		{"zero period", []string{"--health-check-period", "0s"}, cli.ExitUsage, "--health-check-period 0s: must be positive"},
		{"period too short", []string{"--health-check-period", "1ms"}, cli.ExitUsage, "at least 10ms"},
		{"offline before the period", []string{"--health-check-period", "10s", "--offline-after", "1s"}, cli.ExitUsage, "offline-after 1s"},
		{"bad size", []string{"--max-job-size", "huge"}, cli.ExitUsage, `invalid argument "huge" for "--max-job-size"`},
		{"bad connection cap", []string{"--admin-max-conns", "0"}, cli.ExitUsage, "--admin-max-conns"},
		{"pprof off loopback", []string{"--pprof-listen", "0.0.0.0:6060"}, cli.ExitUsage, "pprof"},
		{"half the tls flags", []string{"--tls-cert", "d.crt"}, cli.ExitUsage, "go together"},
		{"public address without tls", []string{"--grpc-listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0"}, cli.ExitUsage, "--insecure"},
		{"web console off loopback without tls", []string{"--web-listen", "0.0.0.0:8080", "--insecure"}, cli.ExitUsage, "--web-listen 0.0.0.0:8080 is not a loopback address"},
		{"web address without port", []string{"--web-listen", "localhost"}, cli.ExitUsage, `--web-listen "localhost": want HOST:PORT`},
		{"web url with a path", []string{"--web-listen", "127.0.0.1:0", "--web-url", "http://h:1/console"}, cli.ExitUsage, "--web-url"},
		{"database not a URL", []string{"--database", "db.example.org"}, cli.ExitUsage, "--database db.example.org: want postgres://... or sqlite:PATH"},
		{"bad log level", []string{"--log-level", "loud"}, cli.ExitUsage, `--log-level "loud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if !strings.HasPrefix(tt.name, "unknown") && tt.name != "arguments" {
				args = append(append([]string{}, base...), args...)
			}
			code, _, stderr := runDirector(t, args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

// TestExampleConfig keeps examples/director.yaml a valid config file.
func TestExampleConfig(t *testing.T) {
	cmd := newServeCmd()
	if err := cli.LoadConfig(cmd.Flags(), "../../examples/director.yaml", "config"); err != nil {
		t.Fatal(err)
	}
}
