package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
	"github.com/fedplane/fedplane/tensor"
)

// headerLen is the smallest prefix of results from which the director
// reads their header: the fields before the first tensor and its tag.
func headerLen(t *testing.T, results []byte) int {
	t.Helper()
	for k := 1; k <= len(results); k++ {
		if _, err := tensor.ReadTaskResultsHeader(results[:k], false); err == nil {
			return k
		}
	}
	t.Fatal("no prefix of the results holds their header")
	return 0
}

// errCut is what a stream that the network cut returns.
var errCut = errors.New("connection reset by peer")

// TestResultsResumeEarlyCut: a resumable results stream cut within the
// 64 KiB the director reads before it writes anything keeps what arrived
// once that holds the header, and the rest completes it; cut before the
// header is whole, it keeps nothing and starts over.
func TestResultsResumeEarlyCut(t *testing.T) {
	f := startFed(t, testCfg(t, newFakeClock()))
	envoys := []string{"site-a", "site-b", "site-c"}
	f.register(t, envoys...)
	id := f.submitBig(t, `{"name": "early", "envoys": ["site-a", "site-b", "site-c"], "rounds": 1, "train": {"command": ["true"]}}`)
	for _, e := range envoys {
		f.waitFor(t, e)
	}
	hlen := headerLen(t, resultsBytes(t, "site-a", id, 0, bigModel(1), bigShapes))
	t.Logf("smallest resumable prefix: %d bytes", hlen)
	tests := []struct {
		envoy    string
		cut      int
		wantHeld int64 // 0: nothing held, ResultsOffset says NotFound
	}{
		{envoy: "site-a", cut: hlen - 1},
		{envoy: "site-b", cut: hlen, wantHeld: int64(hlen)},
		{envoy: "site-c", cut: 40 << 10, wantHeld: 40 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.envoy, func(t *testing.T) {
			body := resultsBytes(t, tt.envoy, id, 0, bigModel(1), bigShapes)
			u := newUpload(t, body)
			cut := io.MultiReader(bytes.NewReader(body[:tt.cut]), failingReader{errCut})
			m := director.ResultsResume{ID: u.id, Size: int64(len(body)), SHA256: u.sum}
			if _, err := f.d.ReportResultsResumable(context.Background(), cut, nil, m); !errors.Is(err, errCut) {
				t.Fatalf("cut at byte %d: got %v, want the cut's error", tt.cut, err)
			}
			held, err := u.offset(f.c)
			switch {
			case tt.wantHeld == 0 && status.Code(err) != codes.NotFound:
				t.Fatalf("ResultsOffset: got %d, %v; want NotFound", held, err)
			case tt.wantHeld > 0 && (err != nil || held != tt.wantHeld):
				t.Fatalf("ResultsOffset: got %d, %v; want %d", held, err, tt.wantHeld)
			}
			if _, err := u.send(f.c, int(held), len(body)); err != nil {
				t.Fatalf("resume at %d: %v", held, err)
			}
		})
	}
	f.settle(t)
	if e, _ := f.db.GetExperiment(context.Background(), id); e.RoundsDone != 1 {
		t.Fatalf("after the resumed reports: round %d (%s %q), want 1", e.RoundsDone, e.Status, e.Reason)
	}
	if left, _ := filepath.Glob(filepath.Join(f.d.Config().DataDir, "partials", "*")); len(left) != 0 {
		t.Errorf("partial results left once all reported: %v", left)
	}
}

// failingReader fails every read with err, as a cut stream does.
type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

// serveTLS opens a director on cfg and serves it with mutual TLS from p,
// as startTLSFed does; stop ends the serving and closes the director (the
// test's end calls it too), so that another may start on cfg's data dir.
func serveTLS(t *testing.T, p *pkitest.PKI, cfg director.Config) (f *tlsFed, stop func()) {
	t.Helper()
	d, err := director.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, adminLis := pkitest.Listen(t, nil), pkitest.Listen(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, d, Config{TLS: p.ServerTLS()}, lis, adminLis) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			d.Close()
		})
	}
	t.Cleanup(stop)
	return &tlsFed{p: p, d: d, grpcAddr: lis.Addr().String(), adminAddr: adminLis.Addr().String()}, stop
}

// TestResultsResumeAfterRestart: partial results cut before a director
// restart resume after it, from the bytes held, and still only for the
// envoy whose they are; the director's stop kept them on disk.
func TestResultsResumeAfterRestart(t *testing.T) {
	p := pkitest.New(t)
	p.Admin(lead1, pki.RoleLead)
	p.Envoy(siteA)
	p.Envoy(siteB)
	cfg := testCfg(t, newFakeClock())
	f, stop := serveTLS(t, p, cfg)
	a := f.clients(t, siteA)
	fa := &fed{d: f.d, c: a, admin: f.admin(lead1)}
	fa.register(t, siteA)
	(&fed{d: f.d, c: f.clients(t, siteB), admin: f.admin(lead1)}).register(t, siteB)
	id := fa.submitBig(t, `{"name": "restart", "envoys": ["site-a", "site-b"], "rounds": 2, "train": {"command": ["true"]}}`)
	fa.waitFor(t, siteA)
	body := resultsBytes(t, siteA, id, 0, bigModel(1), bigShapes)
	u := newUpload(t, body)
	half := len(body) / 2
	if _, err := u.send(a, 0, half); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut: got %v, want DataLoss", err)
	}
	stop()
	if parts, _ := filepath.Glob(filepath.Join(cfg.DataDir, "partials", "results-*.part")); len(parts) != 1 {
		t.Fatalf("partial results on disk after the stop: %v, want one", parts)
	}

	f, _ = serveTLS(t, p, cfg)
	a, b := f.clients(t, siteA), f.clients(t, siteB)
	if _, err := u.offset(b); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("site-b asks for site-a's offset after the restart: got %v, want PermissionDenied", err)
	}
	if got, err := u.offset(a); err != nil || got != int64(half) {
		t.Fatalf("site-a's offset after the restart: got %d, %v; want %d", got, err, half)
	}
	if _, err := u.send(b, half, len(body)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("site-b resumes site-a's upload after the restart: got %v, want PermissionDenied", err)
	}
	if _, err := u.send(a, half, len(body)); err != nil {
		t.Fatalf("site-a resumes after the restart: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(cfg.DataDir, "partials")); len(left) != 0 {
		t.Errorf("partials/ holds %d files once the results are in, want none", len(left))
	}
}

// TestResultsHeldDroppedAtStart: partial results whose round closed while
// the director was down are dropped at its start, not held.
func TestResultsHeldDroppedAtStart(t *testing.T) {
	p := pkitest.New(t)
	p.Admin(lead1, pki.RoleLead)
	p.Envoy(siteA)
	cfg := testCfg(t, newFakeClock())
	f, stop := serveTLS(t, p, cfg)
	a := f.clients(t, siteA)
	fa := &fed{d: f.d, c: a, admin: f.admin(lead1)}
	fa.register(t, siteA)
	id := fa.submitBig(t, `{"name": "aborted", "envoys": ["site-a"], "rounds": 2, "train": {"command": ["true"]}}`)
	fa.waitFor(t, siteA)
	body := resultsBytes(t, siteA, id, 0, bigModel(1), bigShapes)
	u := newUpload(t, body)
	if _, err := u.send(a, 0, len(body)/2); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut: got %v, want DataLoss", err)
	}
	do(t, fa.admin, api.CmdAbortJob+" "+id)
	stop()

	f, _ = serveTLS(t, p, cfg)
	if _, err := u.offset(f.clients(t, siteA)); status.Code(err) != codes.NotFound {
		t.Fatalf("offset of results of an aborted job after the restart: got %v, want NotFound", err)
	}
	if left, _ := os.ReadDir(filepath.Join(cfg.DataDir, "partials")); len(left) != 0 {
		t.Errorf("partials/ holds %d files, want none", len(left))
	}
}
