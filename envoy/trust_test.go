package envoy

import (
	"archive/zip"
	"bytes"
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// trustPKI is a federation's CA with a lead, a project admin and a member,
// and a second federation's CA with a project admin.
type trustPKI struct {
	p, other *pkitest.PKI
}

func newTrustPKI(t *testing.T) trustPKI {
	p := pkitest.New(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: "alice", Role: pki.RoleLead, Org: "hospital-a"})
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: "bob", Role: pki.RoleLead, Org: "bank-b"})
	other := pkitest.New(t)
	other.Admin("mallory", pki.RoleProjectAdmin)
	return trustPKI{p: p, other: other}
}

// sign signs archive as name of CA p.
func sign(t *testing.T, p *pkitest.PKI, name string, archive []byte) []byte {
	t.Helper()
	return p.SignJob(name, archive).Marshal()
}

// serveSigned makes fl serve archive with signature sig.
func serveSigned(fl *flow, archive, sig []byte) {
	chunks := chunked(archive, 100)
	fl.getExperimentData = func(_ *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
		md := metadata.Pairs(api.MDArchiveSize, strconv.Itoa(len(archive)), api.MDArchiveSHA256, sha256Hex(archive))
		if sig != nil {
			md.Set(api.MDJobSignature, string(sig))
		}
		if err := stream.SendHeader(md); err != nil {
			return err
		}
		for _, c := range chunks {
			if err := stream.Send(c); err != nil {
				return err
			}
		}
		return nil
	}
}

// mustWorkspace zips an OpenFL workspace as OpenFL's frontend does: its
// plan at the top, no job.json.
func mustWorkspace(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.Create("plan/plan.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("aggregator: {settings: {rounds_to_train: 1}}\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustPolicy(t *testing.T, yaml string) *Policy {
	t.Helper()
	p, err := ParsePolicy([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSiteTrust runs one experiment per case against a director that
// serves the archive and signature it is told to, and checks whether the
// envoy trains or refuses, and why.
func TestSiteTrust(t *testing.T) {
	tp := newTrustPKI(t)
	train := []string{"./train.sh"}
	archive := mustJob(t, train, map[string]string{"train.sh": trainScript})
	evil := mustJob(t, train, map[string]string{"train.sh": "#!/bin/sh\ncat /etc/shadow >&2\n"})
	workspace := mustWorkspace(t)

	tests := []struct {
		name    string
		serve   []byte // the archive the director serves
		sig     []byte // the signature it passes on
		policy  string // "" for none
		noRoots bool
		// wantRefused is in the failure reported, or "" when the envoy
		// must train.
		wantRefused string
	}{
		{name: "no policy, unsigned", serve: archive},
		{name: "no policy, signed", serve: archive, sig: sign(t, tp.p, "alice", archive)},
		{name: "no policy, no CA, signed", serve: archive, sig: sign(t, tp.p, "alice", archive), noRoots: true},
		{name: "no policy, archive altered by the director", serve: evil, sig: sign(t, tp.p, "alice", archive),
			wantRefused: "the archive was changed after it was signed"},
		{name: "no policy, signer from another CA", serve: archive, sig: sign(t, tp.other, "mallory", archive),
			wantRefused: "not from this site's CA"},
		{name: "policy, unsigned", serve: archive, policy: "{}", wantRefused: "the job is unsigned"},
		{name: "policy, garbage signature", serve: archive, sig: []byte("{}"), policy: "{}", wantRefused: "bad job signature"},
		{name: "policy allows org", serve: archive, sig: sign(t, tp.p, "alice", archive), policy: "submitters: [{org: hospital-a}]"},
		{name: "policy refuses org", serve: archive, sig: sign(t, tp.p, "bob", archive), policy: "submitters: [{org: hospital-a}]",
			wantRefused: "submitter bob (org bank-b, role lead) is not allowed"},
		{name: "policy allows name and role", serve: archive, sig: sign(t, tp.p, "bob", archive),
			policy: "submitters: [{name: bob, role: lead}]"},
		{name: "policy allows program", serve: archive, sig: sign(t, tp.p, "alice", archive),
			policy: "commands: {programs: [./train.sh]}"},
		{name: "policy refuses program", serve: archive, sig: sign(t, tp.p, "alice", archive),
			policy: "commands: {programs: [python3], exact: [[./train.sh, --x]]}", wantRefused: `training command ["./train.sh"] is not allowed`},
		{name: "policy allows exact", serve: archive, sig: sign(t, tp.p, "alice", archive),
			policy: "commands: {exact: [[./train.sh]]}"},
		{name: "an OpenFL workspace", serve: workspace, wantRefused: "the job is an OpenFL workspace (plan/plan.yaml)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fl := newFlow(t, tt.serve)
			serveSigned(fl, tt.serve, tt.sig)
			e := mustEnvoy(t, fl.fakeDirector, 10)
			if !tt.noRoots {
				e.cfg.Roots = tp.p.Roots()
			}
			if tt.policy != "" {
				e.cfg.Policy = mustPolicy(t, tt.policy)
			}
			startRun(t, e)
			fl.finished(t)
			fl.check(t)
			fl.mu.Lock()
			defer fl.mu.Unlock()
			if tt.wantRefused == "" {
				if fl.failed != nil || fl.results == nil {
					t.Fatalf("the envoy did not train: failed %v", fl.failed)
				}
				return
			}
			if fl.results != nil {
				t.Fatal("the envoy trained a job it must refuse")
			}
			if fl.failed.GetErrorCode() != api.CodeSiteRefused || !strings.Contains(fl.failed.GetErrorDescription(), tt.wantRefused) {
				t.Fatalf("reported code %d %q, want code %d saying %q", fl.failed.GetErrorCode(), fl.failed.GetErrorDescription(), api.CodeSiteRefused, tt.wantRefused)
			}
			if fl.called("GetTasks") != 0 {
				t.Error("a refused job asked for tasks")
			}
		})
	}
}

// TestManualApproval holds a job until the operator decides, tells the
// director it waits, and runs or refuses it as decided.
func TestManualApproval(t *testing.T) {
	tp := newTrustPKI(t)
	archive := mustJob(t, []string{"./train.sh"}, map[string]string{"train.sh": trainScript})
	for _, approve := range []bool{true, false} {
		t.Run(map[bool]string{true: "approve", false: "reject"}[approve], func(t *testing.T) {
			fl := newFlow(t, archive)
			serveSigned(fl, archive, sign(t, tp.p, "alice", archive))
			var (
				mu       sync.Mutex
				awaiting []string
			)
			hb := fl.updateEnvoyStatus
			fl.updateEnvoyStatus = func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
				md, _ := metadata.FromIncomingContext(ctx)
				mu.Lock()
				awaiting = append(awaiting, md.Get(api.MDAwaitingApproval)...)
				mu.Unlock()
				return hb(ctx, req)
			}
			e := mustEnvoy(t, fl.fakeDirector, 10)
			e.cfg.Roots = tp.p.Roots()
			e.cfg.Policy = mustPolicy(t, "approval: manual\nsubmitters: [{role: lead}]\n")
			startRun(t, e)

			var pending []PendingJob
			eventually(t, "the job to wait for approval", func() bool {
				var err error
				pending, err = ListPending(e.cfg.WorkDir)
				return err == nil && len(pending) == 1
			})
			p := pending[0]
			if p.JobID != testID || p.Name != "test job" || p.Submitter != "alice" || p.SubmitterOrg != "hospital-a" ||
				!slices.Equal(p.Command, []string{"./train.sh"}) || p.SHA256 != sha256Hex(archive) {
				t.Errorf("pending job %+v", p)
			}
			eventually(t, "a heartbeat saying the job waits", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return slices.Contains(awaiting, testID)
			})
			if fl.called("GetTasks") != 0 {
				t.Fatal("a job waiting for approval asked for tasks")
			}
			if _, err := Decide(e.cfg.WorkDir, testID[:8], approve, "not on our data", "op"); err != nil {
				t.Fatal(err)
			}
			fl.finished(t)
			fl.check(t)
			fl.mu.Lock()
			defer fl.mu.Unlock()
			if approve {
				if fl.results == nil || fl.failed != nil {
					t.Fatalf("approved job did not train: failed %v", fl.failed)
				}
			} else if fl.results != nil || fl.failed.GetErrorCode() != api.CodeSiteRefused ||
				!strings.Contains(fl.failed.GetErrorDescription(), "the site operator rejected the job: not on our data") {
				t.Fatalf("rejected job: results %v, failure %v", fl.results != nil, fl.failed)
			}
			if left, _ := ListPending(e.cfg.WorkDir); len(left) != 0 {
				t.Errorf("still pending after the decision: %v", left)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	work := t.TempDir()
	for _, p := range []PendingJob{
		{JobID: "aaaaaaaa-1111", SHA256: "11"},
		{JobID: "aaaaaaaa-2222", SHA256: "22"},
		{JobID: "bbbbbbbb-3333", SHA256: "33"},
	} {
		if err := writeRecord(approvalsDir(work)+"/"+p.JobID+pendingSuffix, p); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		ref, reason string
		approve     bool
		wantErr     string
		wantID      string
	}{
		{ref: "aaaaaaaa", approve: true, wantErr: "names 2 waiting jobs"},
		{ref: "aaaa", approve: true, wantErr: "at least its first 8"},
		{ref: "cccccccc", approve: true, wantErr: "no job"},
		{ref: "bbbbbbbb", approve: false, wantErr: "needs a reason"},
		{ref: "bbbbbbbb", approve: false, reason: strings.Repeat("x", maxRejectReason+1), wantErr: "at most"},
		{ref: "aaaaaaaa-2", approve: true, wantID: "aaaaaaaa-2222"},
		{ref: "bbbbbbbb-3333", approve: false, reason: "no", wantID: "bbbbbbbb-3333"},
	}
	for _, tt := range tests {
		p, err := Decide(work, tt.ref, tt.approve, tt.reason, "op")
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decide(%q) = %v, want an error saying %q", tt.ref, err, tt.wantErr)
			}
			continue
		}
		if err != nil || p.JobID != tt.wantID {
			t.Errorf("Decide(%q) = %v, %v; want %s", tt.ref, p.JobID, err, tt.wantID)
			continue
		}
		var d Decision
		if err := readRecord(approvalsDir(work)+"/"+p.JobID+decisionSuffix, &d); err != nil {
			t.Fatal(err)
		}
		if d.Approved != tt.approve || d.SHA256 != p.SHA256 || d.Reason != tt.reason || d.By != "op" {
			t.Errorf("decision %+v", d)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{name: "empty", in: ""},
		{name: "full", in: "submitters:\n  - org: a\n  - {name: b, role: project_admin}\ncommands:\n  programs: [python3]\n  exact: [[sh, train.sh]]\napproval: manual\nshare_logs: true\n"},
		{name: "unknown key", in: "submiters: []\n", wantErr: "submiters"},
		{name: "share logs not a bool", in: "share_logs: sometimes\n", wantErr: "sometimes"},
		{name: "misspelt share logs", in: "share_log: true\n", wantErr: "share_log"},
		{name: "misspelt rule field", in: "submitters: [{organisation: a}]\n", wantErr: "organisation"},
		{name: "approval", in: "approval: sometimes\n", wantErr: `approval "sometimes"`},
		{name: "empty rule", in: "submitters: [{}]\n", wantErr: "submitters[0] is empty"},
		{name: "member role", in: "submitters: [{role: member}]\n", wantErr: "only project_admin and lead"},
		{name: "empty program", in: "commands: {programs: ['']}\n", wantErr: "commands.programs[0] is empty"},
		{name: "empty exact", in: "commands: {exact: [[]]}\n", wantErr: "commands.exact[0] is empty"},
		{name: "not YAML", in: "submitters: [\n", wantErr: "yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParsePolicy = %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestPolicyDecisions(t *testing.T) {
	lead := pki.Identity{Name: "alice", Org: "hospital-a", Kind: pki.KindAdmin, Role: pki.RoleLead}
	admin := pki.Identity{Name: "root", Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}
	tests := []struct {
		policy string
		id     pki.Identity
		argv   []string
		want   string // "" allowed, else in the refusal
	}{
		{policy: "{}", id: lead, argv: []string{"anything"}},
		{policy: "submitters: []", id: lead, argv: []string{"x"}, want: "not allowed to run jobs"},
		{policy: "submitters: [{org: hospital-a}]", id: admin, argv: []string{"x"}, want: "submitter root (role project_admin)"},
		{policy: "submitters: [{org: hospital-a, role: project_admin}]", id: lead, argv: []string{"x"}, want: "not allowed to run jobs"},
		{policy: "submitters: [{org: x}, {role: lead}]", id: lead, argv: []string{"x"}},
		{policy: "commands: {programs: [python3]}", id: lead, argv: []string{"python3", "train.py"}},
		{policy: "commands: {programs: [python3]}", id: lead, argv: []string{"/usr/bin/python3", "train.py"}, want: "is not allowed on this site"},
		{policy: "commands: {exact: [[python3, train.py]]}", id: lead, argv: []string{"python3", "train.py", "--evil"}, want: "is not allowed"},
		{policy: "commands: {}", id: lead, argv: []string{"python3"}, want: "is not allowed"},
	}
	for _, tt := range tests {
		p := mustPolicy(t, tt.policy)
		err := p.AllowSubmitter(tt.id)
		if err == nil {
			err = p.AllowCommand(tt.argv)
		}
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: %v %v refused: %v", tt.policy, tt.id.Name, tt.argv, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v %v: got %v, want a refusal saying %q", tt.policy, tt.id.Name, tt.argv, err, tt.want)
		}
	}
}

// TestExamplePolicy keeps the documented example a valid policy.
func TestExamplePolicy(t *testing.T) {
	p, err := LoadPolicy("../examples/site-policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !p.Manual() || len(p.Submitters) != 2 || p.Commands == nil {
		t.Fatalf("example policy parsed as %+v", p)
	}
	if err := p.AllowSubmitter(pki.Identity{Name: "zed", Org: "hospital-a", Role: pki.RoleLead}); err != nil {
		t.Error(err)
	}
	if err := p.AllowSubmitter(pki.Identity{Name: "alice", Org: "lab-c", Role: pki.RoleLead}); err == nil {
		t.Error("alice of lab-c allowed")
	}
}
