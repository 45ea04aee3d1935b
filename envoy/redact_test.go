package envoy

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRedact(t *testing.T) {
	root := t.TempDir()
	link := filepath.Join(root, "link")
	if err := os.Mkdir(filepath.Join(root, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "data"), link); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", "/home/alice")
	cfg := &Config{
		ShardDir: link, // resolved too: tracebacks often show the real path
		WorkDir:  "/srv/envoy",
		Secrets:  []string{"/etc/fedplane/site.key"},
	}
	r := newRedactor(cfg, "/srv/envoy/1234")
	tests := []struct{ in, want string }{
		{"open " + link + "/x.csv: denied", "open <shard>/x.csv: denied"},
		{"open " + filepath.Join(root, "data") + "/x.csv", "open <shard>/x.csv"},
		{"in /srv/envoy/1234/job/train.py, line 3", "in <workspace>/job/train.py, line 3"},
		{"/srv/envoy/other and /srv/envoy", "<work-dir>/other and <work-dir>"},
		{"key /etc/fedplane/site.key.", "key <secret>."},
		{"/home/alice/.local/lib/x.py", "<envoy-home>/.local/lib/x.py"},
		// Only whole path components are redacted.
		{"/srv/envoy2/x /srv/envoy.d /srv/envoy-old", "/srv/envoy2/x /srv/envoy.d /srv/envoy-old"},
		{"/home/alicia", "/home/alicia"},
		{"nothing to hide", "nothing to hide"},
	}
	for _, tt := range tests {
		if got := r.redact(tt.in); got != tt.want {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestRedactSkipsRoot checks that a path like "/" (a HOME of "/", say)
// does not turn every slash into a placeholder.
func TestRedactSkipsRoot(t *testing.T) {
	t.Setenv("HOME", "/")
	r := newRedactor(&Config{ShardDir: "/data"}, "")
	if got, want := r.redact("/usr/bin/python3 /data/x"), "/usr/bin/python3 <shard>/x"; got != want {
		t.Errorf("redact = %q, want %q", got, want)
	}
}
