package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/tensor"
)

// bigShapes is a model over the 64 KiB the director reads first, so a
// results stream can be cut after its header has been checked.
var bigShapes = map[string][]int64{"w": {256, 256}, "b": {2}}

func bigModel(delta float32) map[string][]float32 {
	w := make([]float32, 256*256)
	for i := range w {
		w[i] = float32(i%7) + delta
	}
	return map[string][]float32{"w": w, "b": {0.5 + delta, -0.5 + delta}}
}

// submitBig submits manifest with bigModel as the job's model.
func (f *fed) submitBig(t *testing.T, manifest string) string {
	t.Helper()
	dir := writeJobDir(t, manifest)
	var model bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&model, bigModel(0), bigShapes); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, job.ModelFile), model.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	reply := submit(t, f.admin, zipOf(t, dir))
	if reply.Status() != adminproto.StatusOK {
		t.Fatalf("submit: %s %s", reply.Status(), reply.Info())
	}
	return reply.Meta[api.MetaJobID].(string)
}

// upload is a resumable results upload as an envoy makes it.
type upload struct {
	id   string
	body []byte
	sum  string
}

func newUpload(t *testing.T, body []byte) *upload {
	t.Helper()
	var b [16]byte
	rand.Read(b[:])
	s := sha256.Sum256(body)
	return &upload{id: hex.EncodeToString(b[:]), body: body, sum: hex.EncodeToString(s[:])}
}

// send sends u's bytes [off, end) with the resume headers saying off, then
// ends the stream (short of the whole when end < len(body)) and returns
// the director's answer and the trailer.
func (u *upload) send(c clients, off, end int) (metadata.MD, error) {
	ctx := metadata.AppendToOutgoingContext(context.Background(),
		api.MDUploadID, u.id, api.MDOffset, strconv.Itoa(off), api.MDSize, strconv.Itoa(len(u.body)), api.MDSHA256, u.sum)
	var trailer metadata.MD
	stream, err := c.agg.SendLocalTaskResults(ctx, grpc.Trailer(&trailer))
	if err != nil {
		return nil, err
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	if _, err := w.Write(u.body[off:end]); err == nil {
		w.Close()
	}
	_, err = stream.CloseAndRecv()
	return trailer, err
}

func (u *upload) offset(c clients) (int64, error) {
	resp, err := c.xfr.ResultsOffset(context.Background(), &transferspb.ResultsOffsetRequest{UploadId: u.id})
	return resp.GetOffset(), err
}

// TestResultsResume: a results stream with an upload id that is cut keeps
// what arrived; ResultsOffset says how much; the rest completes it, checked
// by its sha256. A resume must start at the byte held and carry the same
// size and digest; a cut stream without an id (an OpenFL envoy's) keeps
// nothing, as before.
func TestResultsResume(t *testing.T) {
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b")
	id := f.submitBig(t, `{"name": "resume", "envoys": ["site-a", "site-b"], "rounds": 2, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	f.waitFor(t, "site-b")
	body := resultsBytes(t, "site-a", id, 0, bigModel(1), bigShapes)
	half := len(body) / 2
	if half < 64<<10 {
		t.Fatalf("results of %d bytes: want over twice the 64 KiB read first", len(body))
	}

	// An OpenFL-style stream cut half way: refused, nothing kept.
	_, err := (&upload{body: body}).sendPlain(f.c, half)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("short stream without an upload id: got %v, want InvalidArgument", err)
	}
	if left, _ := filepath.Glob(filepath.Join(f.d.Config().DataDir, "tmp", "results-*")); len(left) != 0 {
		t.Fatalf("a cut stream without an upload id left %v", left)
	}

	u := newUpload(t, body)
	if _, err := u.offset(f.c); status.Code(err) != codes.NotFound {
		t.Fatalf("ResultsOffset before any byte: got %v, want NotFound", err)
	}
	if _, err := u.send(f.c, 0, half); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut at byte %d: got %v, want DataLoss", half, err)
	}
	if got, err := u.offset(f.c); err != nil || got != int64(half) {
		t.Fatalf("ResultsOffset after the cut: got %d, %v; want %d", got, err, half)
	}
	// Resuming elsewhere than the byte held: refused, the trailer says it.
	tr, err := u.send(f.c, half/2, len(body))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "holds "+strconv.Itoa(half)) {
		t.Fatalf("resume at %d: got %v, want FailedPrecondition naming %d", half/2, err, half)
	}
	if got := tr.Get(api.MDOffset); len(got) != 1 || got[0] != strconv.Itoa(half) {
		t.Fatalf("trailer %s: got %v, want %d", api.MDOffset, got, half)
	}
	// Other size or digest for the same id: refused, the partial kept.
	other := *u
	other.sum = strings.Repeat("0", 64)
	if _, err := other.send(f.c, half, len(body)); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "began as") {
		t.Fatalf("resume with another digest: got %v, want FailedPrecondition", err)
	}
	// Partial headers: refused before a byte is read.
	ctx := metadata.AppendToOutgoingContext(context.Background(), api.MDUploadID, u.id)
	stream, err := f.c.agg.SendLocalTaskResults(ctx)
	if err == nil {
		_, err = stream.CloseAndRecv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("upload id alone: got %v, want InvalidArgument", err)
	}
	if _, err := u.send(f.c, half, len(body)); err != nil {
		t.Fatalf("resume at %d: %v", half, err)
	}
	if _, err := u.offset(f.c); status.Code(err) != codes.NotFound {
		t.Fatalf("ResultsOffset once done: got %v, want NotFound", err)
	}
	if _, err := newUpload(t, body).send(f.c, 0, len(body)); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("results again: got %v, want AlreadyExists", err)
	}

	// site-b: the whole arrives but its digest is not the one announced.
	bodyB := resultsBytes(t, "site-b", id, 0, bigModel(2), bigShapes)
	bad := newUpload(t, bodyB)
	bad.sum = newUpload(t, body).sum
	if _, err := bad.send(f.c, 0, len(bodyB)/2); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut: got %v, want DataLoss", err)
	}
	if _, err := bad.send(f.c, len(bodyB)/2, len(bodyB)); status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("wrong digest: got %v, want DataLoss naming the sha256", err)
	}
	if _, err := bad.offset(f.c); status.Code(err) != codes.NotFound {
		t.Fatalf("ResultsOffset after a digest mismatch: got %v, want NotFound", err)
	}
	// A stream cut by cancelling it keeps at most what was sent; the
	// resume from what ResultsOffset says completes the round.
	good := newUpload(t, bodyB)
	cctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(context.Background(),
		api.MDUploadID, good.id, api.MDOffset, "0", api.MDSize, strconv.Itoa(len(bodyB)), api.MDSHA256, good.sum))
	stream, err = f.c.agg.SendLocalTaskResults(cctx)
	if err != nil {
		t.Fatal(err)
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	w.Write(bodyB[:len(bodyB)/2])
	w.Close()
	cancel()
	held, err := good.offset(f.c)
	if status.Code(err) == codes.NotFound {
		held, err = 0, nil // cut before the header arrived: starts over
	}
	if err != nil || held > int64(len(bodyB)/2) {
		t.Fatalf("ResultsOffset after a cancel: got %d, %v; want at most %d", held, err, len(bodyB)/2)
	}
	if _, err := good.send(f.c, int(held), len(bodyB)); err != nil {
		t.Fatalf("resume at %d after a cancel: %v", held, err)
	}
	f.settle(t)
	if e, _ := f.db.GetExperiment(context.Background(), id); e.RoundsDone != 1 {
		t.Fatalf("after both resumed reports: round %d (%s %q), want 1", e.RoundsDone, e.Status, e.Reason)
	}
}

// sendPlain sends u's first end bytes without resume headers.
func (u *upload) sendPlain(c clients, end int) (metadata.MD, error) {
	stream, err := c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		return nil, err
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	if _, err := w.Write(u.body[:end]); err == nil {
		w.Close()
	}
	_, err = stream.CloseAndRecv()
	return nil, err
}

// TestResultsResumeIdentity: with TLS, only the envoy whose upload it is
// may learn its offset or resume it.
func TestResultsResumeIdentity(t *testing.T) {
	f := startTLSFed(t)
	f.p.Admin(lead1, pki.RoleLead)
	f.p.Envoy(siteA)
	f.p.Envoy(siteB)
	a, b := f.clients(t, siteA), f.clients(t, siteB)
	fa := &fed{d: f.d, c: a, admin: f.admin(lead1)}
	fa.register(t, siteA)
	fb := &fed{d: f.d, c: b, admin: f.admin(lead1)}
	fb.register(t, siteB)
	id := fa.submitBig(t, `{"name": "mine", "envoys": ["site-a", "site-b"], "rounds": 1, "train": {"command": ["true"]}}`)
	fa.waitFor(t, siteA)
	body := resultsBytes(t, siteA, id, 0, bigModel(1), bigShapes)
	u := newUpload(t, body)
	half := len(body) / 2
	if _, err := u.send(a, 0, half); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut: got %v, want DataLoss", err)
	}
	if _, err := u.offset(b); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("site-b asks for site-a's offset: got %v, want PermissionDenied", err)
	}
	if _, err := u.send(b, half, len(body)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("site-b resumes site-a's upload: got %v, want PermissionDenied", err)
	}
	// site-b's own results under site-a's upload id: refused, and site-a's
	// partial stays.
	theirs := newUpload(t, resultsBytes(t, siteB, id, 0, bigModel(2), bigShapes))
	theirs.id = u.id
	if _, err := theirs.send(b, 0, len(theirs.body)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("site-b begins an upload under site-a's id: got %v, want FailedPrecondition", err)
	}
	if got, err := u.offset(a); err != nil || got != int64(half) {
		t.Fatalf("site-a's offset: got %d, %v; want %d", got, err, half)
	}
	if _, err := u.send(a, half, len(body)); err != nil {
		t.Fatalf("site-a resumes: %v", err)
	}
}
