package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/scrape"
	"github.com/fedplane/fedplane/api/scrape/scrapetest"
)

// TestEnvoyMetrics scrapes a real envoy's --metrics-listen after it ran a
// two-round job: each round counts an ok training run with its duration,
// the archive, the global models and the results count their bytes, the
// heartbeats count, and the gauges say it is registered and idle. No
// label carries a path or the shard's name.
func TestEnvoyMetrics(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shard := makeShard(t, 1, 10)
	e := startEnvoy(t, d, "site-a", shard, "--metrics-listen", anyPort)
	addr := e.WaitRecord(t, time.Minute, scrape.ServingMsg)[api.LogAddr]
	if addr == "" {
		t.Fatalf("the envoy's %q line has no addr", scrape.ServingMsg)
	}
	waitOnline(t, d, "site-a")
	if got := scrapetest.Status(t, "http://"+addr+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", got)
	}
	eventually(t, 30*time.Second, "/readyz 200 once registered", func() bool {
		return scrapetest.Status(t, "http://"+addr+"/readyz") == http.StatusOK
	})

	const rounds = 2
	id := submitJob(t, d, trainJob(t, "metrics", `"envoys": ["site-a"]`, rounds, "ok", "1m"))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	var fams scrapetest.Families
	eventually(t, 30*time.Second, "the envoy idle again", func() bool {
		fams = scrapetest.Scrape(t, addr)
		return fams.Value("fedplane_envoy_experiment_running", nil) == 0
	})
	train := map[string]string{"task": "train"}
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fedplane_envoy_training_runs_total", map[string]string{"task": "train", "outcome": "ok"}, rounds},
		{"fedplane_envoy_training_runs_total", map[string]string{"task": "train", "outcome": "failed"}, 0},
		{"fedplane_envoy_training_duration_seconds", train, rounds},
		{"fedplane_envoy_failures_reported_total", map[string]string{"kind": "training"}, 0},
		{"fedplane_envoy_registered", nil, 1},
		{"fedplane_envoy_experiment_running", nil, 0},
		{"fedplane_envoy_awaiting_approval", nil, 0},
		{"fedplane_envoy_sent_bytes_total", map[string]string{"kind": "logs"}, 0}, // not shared
	} {
		if got := fams.Value(tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v: got %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, k := range []struct{ name, kind string }{
		{"fedplane_envoy_received_bytes_total", "archives"},
		{"fedplane_envoy_received_bytes_total", "models"},
		{"fedplane_envoy_sent_bytes_total", "results"},
	} {
		if got := fams.Value(k.name, map[string]string{"kind": k.kind}); got <= 0 {
			t.Errorf("%s{kind=%s}: got %v, want > 0", k.name, k.kind, got)
		}
	}
	if got := fams.Value("fedplane_envoy_heartbeats_total", map[string]string{"result": "ok"}); got < 1 {
		t.Errorf("heartbeats ok: got %v, want at least 1", got)
	}
	if got := fams.Value("fedplane_envoy_build_info", nil); got != 1 {
		t.Errorf("build info: got %v, want 1", got)
	}
	// What the port shows is the site's activity, not its file system.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v := l.GetValue(); strings.Contains(v, "/") || strings.Contains(v, id) || strings.Contains(v, "site-a") {
					t.Errorf("%s{%s=%q}: a label holds a path, a job id or a name", name, l.GetName(), v)
				}
			}
		}
	}
}

// TestFladminLogs runs a job on an envoy that shares logs and on one that
// does not: fladmin logs prints what the first's training command wrote,
// with the shard's path redacted, and refuses the second with the site's
// reason, an envoy that took no part, and the log of a deleted job.
func TestFladminLogs(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shardA := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shardA, "--share-logs")
	startEnvoy(t, d, "site-b", makeShard(t, 2, 10))
	startEnvoy(t, d, "site-c", makeShard(t, 3, 10))
	waitOnline(t, d, "site-a", "site-b", "site-c")

	id := submitJob(t, d, trainJob(t, "talk", `"envoys": ["site-a", "site-b"]`, 2, "talk", "1m"))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	r := fladmin(t, d.admin, "logs", id, "--envoy", "site-a")
	if r.code != 0 {
		t.Fatalf("logs site-a: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"round 0: epoch 1 loss 0.25\n", "round 1: epoch 1 loss 0.25\n", "reading <shard>/constant\n"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("logs site-a: stdout %q lacks %q", r.stdout, want)
		}
	}
	if strings.Contains(r.stdout, shardA) {
		t.Errorf("logs site-a: stdout %q shows the shard's path %s", r.stdout, shardA)
	}
	if !strings.Contains(r.stderr, "Training log of site-a for job "+id) || !strings.Contains(r.stderr, "bytes") {
		t.Errorf("logs site-a: stderr %q lacks the header line", r.stderr)
	}

	for _, tt := range []struct{ envoy, want string }{
		{"site-b", "site-b does not share training logs (its site policy, or envoy start --share-logs)"},
		{"site-c", "site-c took no part in job " + id},
	} {
		r := fladmin(t, d.admin, "logs", id, "--envoy", tt.envoy)
		if r.code != 1 || !strings.Contains(r.stderr, tt.want) || r.stdout != "" {
			t.Errorf("logs %s: exit %d, stdout %q, stderr %q; want exit 1 and %q", tt.envoy, r.code, r.stdout, r.stderr, tt.want)
		}
	}
	if r := fladmin(t, d.admin, "logs", id); r.code != 2 || !strings.Contains(r.stderr, "--envoy is required") {
		t.Errorf("logs without --envoy: exit %d, stderr %q; want exit 2", r.code, r.stderr)
	}

	logs := filepath.Join(d.dataDir, "logs", id)
	if _, err := os.Stat(filepath.Join(logs, "site-a.log")); err != nil {
		t.Fatalf("the director keeps no log file: %v", err)
	}
	mustFladmin(t, d.admin, "delete-job", id)
	if _, err := os.Stat(logs); !os.IsNotExist(err) {
		t.Errorf("after delete-job, %s: got %v, want it gone", logs, err)
	}
}
