package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// runDirector runs the director command line and returns its exit code,
// stdout and stderr.
func runDirector(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetOut(&out)
	code := cli.Main(root, args, &errOut)
	return code, out.String(), errOut.String()
}

func TestPKICommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	tests := []struct {
		name  string
		args  []string
		wrote []string
	}{
		{"init", []string{"pki", "init", "--dir", dir, "--name", "Test CA", "--days", "30"}, []string{"ca.crt", "ca.key"}},
		{"director", []string{"pki", "issue", "--dir", dir, "--kind", "director", "--name", "director", "--host", "fl.example.org", "--host", "10.0.0.7,::1"}, []string{"director.crt", "director.key"}},
		{"envoy", []string{"pki", "issue", "--dir", dir, "--kind", "envoy", "--name", "env_one", "--org", "Hospital A"}, []string{"env_one.crt", "env_one.key"}},
		{"admin", []string{"pki", "issue", "--dir", dir, "--kind", "admin", "--name", "alice@example.org", "--role", "lead", "--days", "90"}, []string{"alice@example.org.crt", "alice@example.org.key"}},
		{"admin for FLARE's tools", []string{"pki", "issue", "--dir", dir, "--kind", "admin", "--name", "carol", "--role", "lead", "--key-type", "rsa",
			"--startup-kit", filepath.Join(dir, "carol-kit"), "--admin-host", "fl.example.org", "--admin-port", "9003"},
			[]string{"carol.crt", "carol.key", "carol-kit/startup/fed_admin.json", "carol-kit/startup/client.key", "carol-kit/startup/rootCA.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runDirector(t, tt.args...)
			if code != cli.ExitOK {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			for _, f := range tt.wrote {
				path := filepath.Join(dir, f)
				if !strings.Contains(out, "wrote "+path) && !strings.Contains(f, "-kit/") {
					t.Errorf("output %q does not name %s", out, path)
				}
				if _, err := os.Stat(path); err != nil {
					t.Error(err)
				}
			}
			if strings.Contains(out, "PRIVATE KEY") || strings.Contains(errOut, "PRIVATE KEY") {
				t.Error("key material printed")
			}
		})
	}
	fi, err := os.Stat(filepath.Join(dir, "env_one.key"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("key mode: got %v, want 0600", got)
	}
}

func TestPKICommandErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if code, _, errOut := runDirector(t, "pki", "init", "--dir", dir); code != cli.ExitOK {
		t.Fatalf("init: exit %d, stderr %q", code, errOut)
	}
	empty := t.TempDir()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"init without --dir", []string{"pki", "init"}, cli.ExitUsage, "--dir is required"},
		{"init with zero days", []string{"pki", "init", "--dir", empty, "--days", "0"}, cli.ExitUsage, "--days 0"},
		{"init twice", []string{"pki", "init", "--dir", dir}, cli.ExitError, "ca.crt: file already exists"},
		{"issue without --dir", []string{"pki", "issue", "--kind", "envoy", "--name", "x"}, cli.ExitUsage, "--dir is required"},
		{"issue without --kind", []string{"pki", "issue", "--dir", dir, "--name", "x"}, cli.ExitUsage, "--kind is required"},
		{"issue without --name", []string{"pki", "issue", "--dir", dir, "--kind", "envoy"}, cli.ExitUsage, "--name is required"},
		{"unknown kind", []string{"pki", "issue", "--dir", dir, "--kind", "frontend", "--name", "x"}, cli.ExitUsage, `unknown kind "frontend"`},
		{"unknown role", []string{"pki", "issue", "--dir", dir, "--kind", "admin", "--name", "x", "--role", "owner"}, cli.ExitUsage, `unknown role "owner"`},
		{"role on an envoy", []string{"pki", "issue", "--dir", dir, "--kind", "envoy", "--name", "x", "--role", "lead"}, cli.ExitUsage, "only admin certificates carry a role"},
		{"bad name", []string{"pki", "issue", "--dir", dir, "--kind", "envoy", "--name", "../x"}, cli.ExitUsage, "starts with a dot"},
		{"unknown flag", []string{"pki", "issue", "--dir", dir, "--color", "red"}, cli.ExitUsage, "unknown flag"},
		{"positional argument", []string{"pki", "init", "pki"}, cli.ExitUsage, "unknown command"},
		{"no CA", []string{"pki", "issue", "--dir", empty, "--kind", "envoy", "--name", "x"}, cli.ExitError, "no CA in " + empty},
		{"rsa envoy", []string{"pki", "issue", "--dir", dir, "--kind", "envoy", "--name", "x", "--key-type", "rsa"}, cli.ExitUsage, "only admin certificates may have RSA keys"},
		{"kit for an envoy", []string{"pki", "issue", "--dir", dir, "--kind", "envoy", "--name", "x", "--startup-kit", empty}, cli.ExitUsage, "--startup-kit is for --kind admin"},
		{"kit with a bad host", []string{"pki", "issue", "--dir", dir, "--kind", "admin", "--name", "x", "--startup-kit", empty, "--admin-host", "::1"}, cli.ExitUsage, "IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runDirector(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("got exit %d, stderr %q; want exit %d with %q", code, errOut, tt.code, tt.want)
			}
		})
	}
}

func TestPKIHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"pki", "--help"}, []string{"OU", "O ", "0600", "pki init", "--host", "--tls-ca", "--tls-cert", "--tls-key"}},
		{[]string{"pki", "issue", "--help"}, []string{"OU", "0600", "project_admin", "--org", "must\n                   cover every name and address", "--tls-server-name", "--host fl.example.org --host 10.0.0.7"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, _ := runDirector(t, tt.args...)
			if code != cli.ExitOK {
				t.Fatalf("exit %d", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("help does not mention %q", w)
				}
			}
		})
	}
}
