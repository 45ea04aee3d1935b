package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// refusingDirector refuses every shard, saying why.
type refusingDirector struct {
	directorpb.UnimplementedDirectorServer
}

func (refusingDirector) UpdateShardInfo(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("fedplane-reason", "sample shape "+strings.Join(req.GetShardInfo().GetSampleShape(), "x")+" differs from the federation's 32x32"))
	return &directorpb.UpdateShardInfoResponse{Accepted: false}, nil
}

// mustRefusingDirector serves refusingDirector on a free loopback port.
func mustRefusingDirector(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := grpc.NewServer()
	directorpb.RegisterDirectorServer(s, refusingDirector{})
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return lis.Addr().String()
}

func run(args ...string) (int, string) {
	var stderr bytes.Buffer
	code := cli.Main(newRootCmd(), args, &stderr)
	return code, stderr.String()
}

func TestStartUsage(t *testing.T) {
	shard := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "no name", args: []string{"start", "--shard-dir", shard}, wantCode: cli.ExitUsage, wantErr: "Error: --name is required"},
		{name: "no shard dir", args: []string{"start", "--name", "site-1"}, wantCode: cli.ExitUsage, wantErr: "Error: --shard-dir is required"},
		{name: "share logs with a policy", args: []string{"start", "--name", "a", "--shard-dir", shard, "--share-logs", "--policy", "p.yaml"}, wantCode: cli.ExitUsage, wantErr: "set share_logs: true in it"},
		{name: "bad metrics address", args: []string{"start", "--name", "a", "--shard-dir", shard, "--metrics-listen", "localhost"}, wantCode: cli.ExitUsage, wantErr: "--metrics-listen"},
		{name: "bad kill grace", args: []string{"start", "--name", "a", "--shard-dir", shard, "--kill-grace", "0s"}, wantCode: cli.ExitUsage, wantErr: "--kill-grace 0s: must be positive"},
		{name: "bad log format", args: []string{"start", "--name", "a", "--shard-dir", shard, "--log-format", "xml"}, wantCode: cli.ExitUsage, wantErr: `--log-format "xml"`},
		{name: "unknown flag", args: []string{"start", "--nmae", "a"}, wantCode: cli.ExitUsage, wantErr: "unknown flag: --nmae"},
		{name: "arguments", args: []string{"start", "extra"}, wantCode: cli.ExitUsage, wantErr: "unknown command"},
		{name: "name with a space", args: []string{"start", "--name", "site a", "--shard-dir", shard}, wantCode: cli.ExitUsage, wantErr: `--name "site a" has ' '`},
		{name: "name with a dot first", args: []string{"start", "--name", ".a", "--shard-dir", shard}, wantCode: cli.ExitUsage, wantErr: `--name ".a" starts with a dot`},
		{name: "name too long", args: []string{"start", "--name", strings.Repeat("a", 129), "--shard-dir", shard}, wantCode: cli.ExitUsage, wantErr: "at most 128"},
		{name: "director without port", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "localhost"}, wantCode: cli.ExitUsage, wantErr: `--director "localhost": want HOST:PORT`},
		{name: "director with a bad port", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "localhost:http2"}, wantCode: cli.ExitUsage, wantErr: `port "http2" is not a number`},
		{name: "director empty", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", ""}, wantCode: cli.ExitUsage, wantErr: "--director is empty"},
		{name: "directors with an empty item", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "a:1,,b:2"}, wantCode: cli.ExitUsage, wantErr: `--director "a:1,,b:2": address 2 of 3 is empty`},
		{name: "directors with a trailing comma", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "a:1,"}, wantCode: cli.ExitUsage, wantErr: "address 2 of 2 is empty"},
		{name: "director given twice", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "a:1,b:2", "--director", "a:1"}, wantCode: cli.ExitUsage, wantErr: "a:1 is given twice (addresses 1 and 3)"},
		{name: "directors with a bad one", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "a:1,b"}, wantCode: cli.ExitUsage, wantErr: `--director "b": want HOST:PORT`},
		{name: "directors with a scheme", args: []string{"start", "--name", "a", "--shard-dir", shard, "--director", "dns:///a:1,b:2"}, wantCode: cli.ExitUsage, wantErr: `--director "dns:///a:1": want HOST:PORT`},
		{name: "empty shape dimension", args: []string{"start", "--name", "a", "--shard-dir", shard, "--sample-shape", "28,,28"}, wantCode: cli.ExitUsage, wantErr: "--sample-shape"},
		{name: "trailing comma in shape", args: []string{"start", "--name", "a", "--shard-dir", shard, "--target-shape", "1,"}, wantCode: cli.ExitUsage, wantErr: "--target-shape"},
		{name: "bad samples", args: []string{"start", "--name", "a", "--shard-dir", shard, "--samples", "-5"}, wantCode: cli.ExitUsage, wantErr: `invalid argument "-5" for "--samples"`},
		{name: "bad kill grace value", args: []string{"start", "--name", "a", "--shard-dir", shard, "--kill-grace", "soon"}, wantCode: cli.ExitUsage, wantErr: `invalid argument "soon" for "--kill-grace"`},
		{name: "half the tls flags", args: []string{"start", "--name", "a", "--shard-dir", shard, "--tls-ca", "ca.crt"}, wantCode: cli.ExitUsage, wantErr: "go together"},
		{name: "missing shard dir", args: []string{"start", "--name", "a", "--shard-dir", filepath.Join(shard, "nope")}, wantCode: cli.ExitError, wantErr: "Error: start envoy: shard dir: "},
		{name: "director target with a scheme", args: []string{"start", "--name", "a", "--shard-dir", filepath.Join(shard, "nope"), "--director", "dns:///localhost:50051"}, wantCode: cli.ExitError, wantErr: "Error: start envoy: shard dir: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stderr := run(tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
}

func TestStartHelp(t *testing.T) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	if code := cli.Main(root, []string{"start", "--help"}, &out); code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	for _, want := range []string{"--name", "--shard-dir", "--director", "comma-separated, tried in order", "--work-dir", "--kill-grace", "--config", "FEDPLANE_DATA", "--run-as", "--allow-root", "--sandbox", "--share-stderr", "Examples:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

func TestStartRefused(t *testing.T) {
	addr := mustRefusingDirector(t)
	code, stderr := run("start", "--name", "site-1", "--director", addr, "--shard-dir", t.TempDir(), "--allow-root",
		"--sample-shape", "28, 28", "--work-dir", filepath.Join(t.TempDir(), "work"), "--log-level", "error")
	want := "Error: director refused the shard: sample shape 28x28 differs from the federation's 32x32\n"
	if code != cli.ExitError || stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
}

// TestStartRefusesRoot checks that an envoy running as root will not run
// training as root unless told, and says how to tell it.
func TestStartRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the refusal is of root; CI runs the tests as root")
	}
	code, stderr := run("start", "--name", "site-1", "--director", "127.0.0.1:1", "--shard-dir", t.TempDir(),
		"--work-dir", filepath.Join(t.TempDir(), "work"), "--log-level", "error")
	want := "Error: start envoy: training would run as root: the envoy runs as root and would run the job's code as root too; give --run-as USER to run it as another user, or --allow-root to run it as root\n"
	if code != cli.ExitError || stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
}

func TestStartConfigFile(t *testing.T) {
	addr := mustRefusingDirector(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "envoy.yaml")
	yaml := "name: site-1\ndirector: " + addr + "\nshard-dir: " + dir + "\nsample-shape: [30, 30]\nsamples: 100\nwork-dir: " + filepath.Join(dir, "work") + "\nlog-level: error\nallow-root: true\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The command line wins over the file.
	code, stderr := run("start", "--config", config, "--sample-shape", "31,31")
	want := "Error: director refused the shard: sample shape 31x31 differs from the federation's 32x32\n"
	if code != cli.ExitError || stderr != want {
		t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "work")); err != nil {
		t.Errorf("work dir from the config file: %v", err)
	}

	if err := os.WriteFile(config, []byte("nmae: site-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr = run("start", "--config", config)
	if code != cli.ExitUsage || !strings.Contains(stderr, `unknown key "nmae"`) {
		t.Errorf("exit %d, stderr %q; want exit 2 and an unknown key error", code, stderr)
	}

	// A value the envoy refuses is a usage error from the file as from a flag.
	yaml = "name: site a\nshard-dir: " + dir + "\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stderr = run("start", "--config", config)
	if code != cli.ExitUsage || !strings.Contains(stderr, `--name "site a"`) {
		t.Errorf("exit %d, stderr %q; want exit 2 naming --name", code, stderr)
	}
}

// TestExampleConfig keeps examples/envoy.yaml a valid config file.
func TestExampleConfig(t *testing.T) {
	cmd := newStartCmd()
	if err := cli.LoadConfig(cmd.Flags(), "../../examples/envoy.yaml", "config"); err != nil {
		t.Fatal(err)
	}
}

// mustDeadAddr returns a loopback address where nothing listens: a port
// the kernel handed out and that was closed again.
func mustDeadAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestStartFailsOver gives the envoy a dead director first and a live one
// second, on the command line and as a list in the config file: it reaches
// the second, which refuses the shard, and says so.
func TestStartFailsOver(t *testing.T) {
	dead, live := mustDeadAddr(t), mustRefusingDirector(t)
	dir := t.TempDir()
	config := filepath.Join(dir, "envoy.yaml")
	yaml := "director: [" + dead + ", " + live + "]\n"
	if err := os.WriteFile(config, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
	}{
		{"flag", []string{"--director", dead + "," + live}},
		{"flag given twice", []string{"--director", dead, "--director", live}},
		{"config list", []string{"--config", config}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"start", "--name", "site-1", "--shard-dir", t.TempDir(), "--allow-root",
				"--sample-shape", "28,28", "--work-dir", filepath.Join(t.TempDir(), "work"), "--log-level", "error"}, tt.args...)
			code, stderr := run(args...)
			want := "Error: director refused the shard: sample shape 28x28 differs from the federation's 32x32\n"
			if code != cli.ExitError || stderr != want {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
			}
		})
	}
}
