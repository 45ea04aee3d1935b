package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSitePolicyAndApproval runs two sites with policies: site-a admits
// org-lead1's jobs after its operator approves them, site-b admits them at
// once. A job of lead1 waits for site-a's operator, shows so, and finishes
// once approved; a job of lead2 is refused by the sites' policies, and the
// job says which site refused it and why.
func TestSitePolicyAndApproval(t *testing.T) {
	root := t.TempDir()
	fed, foreign := filepath.Join(root, "fed"), filepath.Join(root, "foreign")
	src, fsrc := federationPKI(t)
	os.Rename(src, fed)
	os.Rename(fsrc, foreign)

	d := startDirectorAdmin(t, t.TempDir(), append([]string{"--health-check-period", "300ms", "--offline-after", "3s"}, tlsArgs(fed, "director")...)...)
	admin := func(name string, args ...string) result {
		return fladmin(t, d.admin, append(tlsArgs(fed, name), args...)...)
	}
	mustAdmin := func(name string, args ...string) string {
		t.Helper()
		r := admin(name, args...)
		if r.code != 0 {
			t.Fatalf("fladmin %v as %s: exit %d\nstdout: %s\nstderr: %s", args, name, r.code, r.stdout, r.stderr)
		}
		return r.stdout
	}

	policyA := filepath.Join(root, "site-a-policy.yaml")
	os.WriteFile(policyA, []byte("submitters:\n  - org: org-lead1\napproval: manual\n"), 0o644)
	policyB := filepath.Join(root, "site-b-policy.yaml")
	os.WriteFile(policyB, []byte("submitters:\n  - org: org-lead1\ncommands:\n  programs: [python3]\n"), 0o644)
	workA := filepath.Join(t.TempDir(), "work-a")
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10), append([]string{"--work-dir", workA, "--policy", policyA}, tlsArgs(fed, "site-a")...)...)
	startEnvoy(t, d, "site-b", makeShard(t, 4, 30), append([]string{"--policy", policyB}, tlsArgs(fed, "site-b")...)...)
	eventually(t, 60*time.Second, "envoys online over mTLS", func() bool {
		var envoys []envoyState
		json.Unmarshal([]byte(mustAdmin("viewer", "-o", "json", "list-envoys")), &envoys)
		return len(envoys) == 2 && envoys[0].Online && envoys[1].Online
	})

	// lead1's job: site-b runs it, site-a holds it for its operator.
	job := trainJob(t, "approved", `"envoys": ["site-a", "site-b"]`, 1, "ok", "1m")
	id := strings.TrimSpace(strings.TrimPrefix(mustAdmin("lead1", "submit-job", job), "Submitted job "))
	var j jobState
	eventually(t, 60*time.Second, "the job to wait for site-a's approval", func() bool {
		json.Unmarshal([]byte(mustAdmin("viewer", "-o", "json", "show-job", id)), &j)
		for _, e := range j.Envoys {
			if e.Name == "site-a" && e.Status == "awaiting_approval" {
				return true
			}
		}
		return false
	})
	if j.Status != "in_progress" || j.Reason != "waiting for approval at site-a" {
		t.Errorf("waiting job: status %q, reason %q", j.Status, j.Reason)
	}
	if out := mustAdmin("viewer", "list-jobs"); !strings.Contains(out, "waiting for approval at site-a") {
		t.Errorf("list-jobs does not say what the job waits for:\n%s", out)
	}
	r := run(t, "envoy", "pending", "--work-dir", workA, "-o", "json")
	var pending []struct {
		JobID                         string `json:"job_id"`
		Name, Submitter, SubmitterOrg string
		Command                       []string
		SHA256                        string `json:"archiveSha256"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pending) != nil || len(pending) != 1 {
		t.Fatalf("envoy pending: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if p := pending[0]; p.JobID != id || p.Name != "approved" || p.Submitter != "lead1" || p.SubmitterOrg != "org-lead1" ||
		strings.Join(p.Command, " ") != "python3 train.py ok" || len(p.SHA256) != 64 {
		t.Errorf("pending job: %+v", p)
	}
	if r := run(t, "envoy", "pending", "--work-dir", workA); r.code != 0 || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "lead1 (org-lead1)") {
		t.Errorf("envoy pending table: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, "envoy", "approve", id[:8], "--work-dir", workA); r.code != 0 || !strings.Contains(r.stdout, "Approved job "+id) {
		t.Fatalf("envoy approve: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	if r := admin("lead1", "wait-job", id, "--wait-timeout", "60s"); r.code != 0 || !strings.Contains(r.stdout, "finished") {
		t.Fatalf("approved job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}

	// lead2's job: no site admits org-lead2.
	job2 := trainJob(t, "refused", `"envoys": ["site-a", "site-b"]`, 1, "ok", "1m")
	id2 := strings.TrimSpace(strings.TrimPrefix(mustAdmin("lead2", "submit-job", job2), "Submitted job "))
	admin("lead2", "wait-job", id2, "--wait-timeout", "60s")
	json.Unmarshal([]byte(mustAdmin("viewer", "-o", "json", "show-job", id2)), &j)
	if j.Status != "failed" || !strings.Contains(j.Reason, "refused the job") ||
		!strings.Contains(j.Reason, "submitter lead2 (org org-lead2, role lead) is not allowed to run jobs on this site") {
		t.Fatalf("refused job: status %q, reason %q", j.Status, j.Reason)
	}
	refused := 0
	for _, e := range j.Envoys {
		if e.Status == "refused" {
			refused++
		}
	}
	if refused == 0 {
		t.Errorf("no participant shows the refusal: %+v", j.Envoys)
	}
}
