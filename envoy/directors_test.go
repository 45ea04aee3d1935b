package envoy

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/api/transport"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
	"github.com/fedplane/fedplane/tensor"
)

func TestCheckDirectors(t *testing.T) {
	tests := []struct {
		name string
		dirs []string
		err  string // "" for none
	}{
		{"one", []string{"127.0.0.1:50051"}, ""},
		{"one target with a scheme", []string{"dns:///fl.example.org:50051"}, ""},
		{"several", []string{"a.example.org:50051", "b.example.org:50051", "[::1]:50051"}, ""},
		{"none", nil, "director address is required"},
		{"empty", []string{""}, "director address is required"},
		{"empty item", []string{"a:1", ""}, "director address 2 of 2 is empty"},
		{"without port", []string{"a:1", "b"}, `director address "b": with several directors, each is host:port`},
		{"without host", []string{"a:1", ":2"}, `director address ":2": with several directors, each is host:port`},
		{"scheme among several", []string{"dns:///a:1", "b:2"}, `director address "dns:///a:1": with several directors, each is host:port`},
		{"twice", []string{"a:1", "b:2", "a:1"}, `director address "a:1" is given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkDirectors(tt.dirs)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("got %v, want %q", err, tt.err)
			}
		})
	}
}

// replica is a fake director on a loopback port of its own: one of the
// replicas an envoy is given.
type replica struct {
	addr string
	s    *grpc.Server
}

// mustReplica serves f on a free loopback port until the test ends, with
// TLS if cfg is set.
func mustReplica(tb testing.TB, f *fakeDirector, cfg *tls.Config) *replica {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	opts := transport.ServerOptions()
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s := grpc.NewServer(opts...)
	directorpb.RegisterDirectorServer(s, director{f: f})
	aggregatorpb.RegisterAggregatorServer(s, aggregator{f: f})
	transferspb.RegisterTransfersServer(s, transfers{f: f})
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return &replica{addr: lis.Addr().String(), s: s}
}

// kill closes the replica's port and cuts its connections, as a director
// killed with SIGKILL does. It waits for the replica's handlers to return,
// so a handler calls it on a goroutine of its own.
func (r *replica) kill() { r.s.Stop() }

// waitKilled is what a handler of r does to be cut off mid-call: it kills r
// and waits for the call's end.
func (r *replica) waitKilled(ctx context.Context) error {
	go r.kill()
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

// registeredFake is a director that answers heartbeats once the envoy has
// registered with it, and NotFound before, as a replica that has not seen
// the envoy does.
func registeredFake() *fakeDirector {
	f := &fakeDirector{}
	f.updateEnvoyStatus = func(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		if f.called("UpdateShardInfo") == 0 {
			return nil, status.Error(codes.NotFound, "no such envoy")
		}
		return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: fastPeriod}, nil
	}
	return f
}

// withDirectors makes the envoy dial dirs, with opts, instead of the
// in-memory fake.
func withDirectors(dirs []string, opts ...grpc.DialOption) func(*Config) {
	return func(c *Config) {
		c.Directors = dirs
		c.DialOptions = opts
	}
}

// TestRunFailsOver runs an envoy against two replicas: it serves the first
// while that lives, registering, heartbeating and long-polling there only;
// once the first is killed its heartbeat, registration and long poll all go
// to the second.
func TestRunFailsOver(t *testing.T) {
	fa, fb := registeredFake(), registeredFake()
	a, b := mustReplica(t, fa, nil), mustReplica(t, fb, nil)
	e := mustEnvoy(t, nil, 10, withDirectors([]string{a.addr, b.addr}))
	startRun(t, e)
	eventually(t, "heartbeats and a long poll at the first replica", func() bool {
		return fa.called("UpdateEnvoyStatus") >= 2 && fa.called("WaitExperiment") >= 1
	})
	if n := fb.called("UpdateShardInfo") + fb.called("UpdateEnvoyStatus") + fb.called("WaitExperiment"); n != 0 {
		t.Fatalf("the second replica got %d calls while the first served", n)
	}
	a.kill()
	eventually(t, "registration, heartbeats and a long poll at the second replica", func() bool {
		return fb.called("UpdateShardInfo") >= 1 && fb.called("UpdateEnvoyStatus") >= 2 && fb.called("WaitExperiment") >= 1
	})
	if !e.registered.Load() {
		t.Fatal("envoy not ready after failing over")
	}
}

// TestRunSkipsADeadDirector gives the envoy a first address where nothing
// listens.
func TestRunSkipsADeadDirector(t *testing.T) {
	dead := mustReplica(t, &fakeDirector{}, nil)
	dead.kill()
	fb := registeredFake()
	b := mustReplica(t, fb, nil)
	e := mustEnvoy(t, nil, 10, withDirectors([]string{dead.addr, b.addr}))
	startRun(t, e)
	eventually(t, "registered with the live replica", func() bool {
		return fb.called("UpdateShardInfo") >= 1 && fb.called("UpdateEnvoyStatus") >= 1 && e.registered.Load()
	})
}

// TestDirectorsTLSNames checks each replica's certificate against the host
// dialled for it: replicas whose certificates carry different names, the
// first dead, the envoy registers with the second only when its name is
// the one dialled for it, or the one --tls-server-name gives for all.
func TestDirectorsTLSNames(t *testing.T) {
	p := pkitest.New(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "by-ip", Hosts: []string{"127.0.0.1"}})
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "by-name", Hosts: []string{"localhost"}})
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "shared", Hosts: []string{"fl.example.org"}})
	client := p.ClientTLS(p.Envoy("site-1"))
	tests := []struct {
		name      string
		first     string // the certificate of the dead replica
		second    string // the certificate of the live one, dialled as localhost
		authority string // --tls-server-name
		want      string // "" to register; else in the log of every retry
	}{
		{name: "each its own name", first: "by-ip", second: "by-name"},
		{name: "the second's certificate lacks its name", first: "by-ip", second: "by-ip", want: "does not carry the name dialled"},
		{name: "one name for all", first: "shared", second: "shared", authority: "fl.example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dead := mustReplica(t, &fakeDirector{}, p.ServerTLSOf(tt.first))
			dead.kill()
			fb := registeredFake()
			b := mustReplica(t, fb, p.ServerTLSOf(tt.second))
			_, port, _ := net.SplitHostPort(b.addr)
			opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(client.Clone()))}
			if tt.authority != "" {
				opts = append(opts, grpc.WithAuthority(tt.authority))
			}
			var logs syncBuffer
			e := mustEnvoy(t, nil, 10, withDirectors([]string{dead.addr, "localhost:" + port}, opts...), func(c *Config) {
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			stop, _ := startRun(t, e)
			defer func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			}()
			if tt.want == "" {
				eventually(t, "registered with the second replica", func() bool { return fb.called("UpdateShardInfo") >= 1 && e.registered.Load() })
				return
			}
			eventually(t, "two retries naming the problem", func() bool {
				return strings.Count(logs.String(), tt.want) >= 2
			})
			stop()
			if n := fb.called("UpdateShardInfo"); n != 0 {
				t.Fatalf("registered %d times with a replica whose certificate lacks its name", n)
			}
		})
	}
}

// TestFetchResumesOnTheNextDirector cuts a job archive's download off
// halfway by killing the replica that sends it: the rest comes from the
// next replica, asked for from the bytes held.
func TestFetchResumesOnTheNextDirector(t *testing.T) {
	archive := mustJob(t, []string{"true"}, map[string]string{"pad.txt": strings.Repeat("resumable ", 2000)})
	half := len(archive) / 2
	half -= half % 100
	// Both replicas serve the same archive, as replicas on one blob store
	// do; the first breaks off once the envoy holds half of it.
	var (
		a   *replica
		tmp string
	)
	c := &cutDirector{archive: archive, cutAt: half, drop: func(ctx context.Context) error {
		eventually(t, "half the archive on the envoy's disk", func() bool {
			fi, err := os.Stat(tmp)
			return err == nil && fi.Size() == int64(half)
		})
		return a.waitKilled(ctx)
	}}
	fa, fb := &fakeDirector{getExperimentData: c.serve}, &fakeDirector{getExperimentData: c.serve}
	a = mustReplica(t, fa, nil)
	b := mustReplica(t, fb, nil)
	e := mustEnvoy(t, nil, 10, withDirectors([]string{a.addr, b.addr}))
	mustConnect(t, e)
	x := &experiment{id: "exp-1", dir: filepath.Join(e.cfg.WorkDir, "exp-1"), log: e.log}
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	tmp = filepath.Join(x.dir, archiveName+tmpSuffix)
	if _, err := e.fetch(context.Background(), x); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if fa.called("GetExperimentData") != 1 || fb.called("GetExperimentData") != 1 {
		t.Errorf("downloads: %d from the first replica, %d from the second; want one each", fa.called("GetExperimentData"), fb.called("GetExperimentData"))
	}
	if want := strconv.Itoa(half); len(c.offsets) != 2 || c.offsets[0] != "" || c.offsets[1] != want {
		t.Errorf("offsets asked %q, want none then %q", c.offsets, want)
	}
	got, err := os.ReadFile(filepath.Join(x.dir, archiveName))
	if err != nil || !bytes.Equal(got, archive) {
		t.Errorf("archive on disk: %d bytes, %v; want the %d sent", len(got), err, len(archive))
	}
}

// TestSendResultsResumesOnTheNextDirector cuts a results upload off by
// killing the replica that takes it: the next replica says how much
// arrived (the replicas share what they hold, as on one blob store), and
// the rest goes there under the same upload id.
func TestSendResultsResumesOnTheNextDirector(t *testing.T) {
	w := make([]float32, 1<<20) // 4 MiB: more than one chunk
	for i := range w {
		w[i] = float32(i)
	}
	var model bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&model, map[string][]float32{"w": w}, map[string][]int64{"w": {1 << 20}}); err != nil {
		t.Fatal(err)
	}
	trained, _, err := tensor.ReadSafetensors(bytes.NewReader(model.Bytes()), int64(model.Len()))
	if err != nil {
		t.Fatal(err)
	}
	h := tensor.TaskResultsHeader{Sender: "site-1", Receiver: directorName, FederationUUID: "exp-1", Round: 3, TaskName: taskTrain, DataSize: 10}
	var want bytes.Buffer
	if _, err := tensor.WriteTaskResults(&want, h, trained, nil); err != nil {
		t.Fatal(err)
	}
	var a *replica
	c := &cutResults{cutAt: want.Len() / 2, drop: func(ctx context.Context) error { return a.waitKilled(ctx) }}
	fa := &fakeDirector{sendLocalTaskResults: c.serve, resultsOffset: c.offset}
	fb := &fakeDirector{sendLocalTaskResults: c.serve, resultsOffset: c.offset}
	a = mustReplica(t, fa, nil)
	b := mustReplica(t, fb, nil)
	e := mustEnvoy(t, nil, 10, withDirectors([]string{a.addr, b.addr}))
	mustConnect(t, e)
	x := &experiment{id: "exp-1", dir: filepath.Join(e.cfg.WorkDir, "exp-1"), log: e.log}
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.sendResults(ctx, x, h, trained, nil); err != nil {
		t.Fatalf("sendResults: %v", err)
	}
	if !bytes.Equal(c.held, want.Bytes()) {
		t.Fatalf("replicas hold %d bytes, not the %d serialized", len(c.held), want.Len())
	}
	if fa.called("SendLocalTaskResults") != 1 || fb.called("SendLocalTaskResults") != 1 || fb.called("ResultsOffset") != 1 {
		t.Errorf("uploads %d to the first replica, %d to the second, %d offsets asked of the second; want 1, 1, 1",
			fa.called("SendLocalTaskResults"), fb.called("SendLocalTaskResults"), fb.called("ResultsOffset"))
	}
	if len(c.ids) != 2 || c.ids[0] != c.ids[1] {
		t.Errorf("upload ids %q: want one, twice", c.ids)
	}
	if held := c.received[0]; len(c.offsets) != 2 || c.offsets[0] != "0" || c.offsets[1] != strconv.Itoa(held) || held == 0 {
		t.Errorf("offsets %q: want 0 then the %d bytes the first replica took", c.offsets, held)
	}
}
