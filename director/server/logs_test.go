package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
)

// sendLogChunks uploads msgs as one training log stream.
func sendLogChunks(c clients, msgs ...*logspb.TrainingLogChunk) error {
	stream, err := c.log.SendTrainingLog(context.Background())
	if err != nil {
		return err
	}
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			break // the director ended the stream: its status comes with the reply
		}
	}
	_, err = stream.CloseAndRecv()
	return err
}

func logHeader(envoy, id string, size int64) *logspb.TrainingLogHeader {
	return &logspb.TrainingLogHeader{EnvoyName: envoy, ExperimentName: id, Size: size}
}

// heartbeat sends envoy's heartbeat, saying whether it shares logs, and
// returns the logs the reply asks for.
func heartbeat(t *testing.T, f *fed, envoy string, shares bool) []string {
	t.Helper()
	ctx := context.Background()
	if shares {
		ctx = metadata.AppendToOutgoingContext(ctx, api.MDShareLogs, "true")
	}
	var hdr metadata.MD
	if _, err := f.c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: envoy}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	return hdr.Get(api.MDSendLog)
}

// getLog runs get_log and decodes the log of an ok reply.
func getLog(t *testing.T, f *fed, id, envoy string) (*adminproto.Message, api.TrainingLog) {
	t.Helper()
	reply := do(t, f.admin, api.CmdGetLog+" "+id+" "+envoy)
	var l api.TrainingLog
	if reply.Status() == adminproto.StatusOK {
		b, _ := json.Marshal(reply.Meta[api.MetaLog])
		if err := json.Unmarshal(b, &l); err != nil {
			t.Fatal(err)
		}
	}
	return reply, l
}

// TestTrainingLogs drives the director's side of shared training logs:
// uploads only from the job's envoys, within the cap and exactly as
// announced; get_log's refusals; a fresh copy asked for in a heartbeat
// reply and waited for; the logs removed with the job.
func TestTrainingLogs(t *testing.T) {
	clock := newFakeClock()
	f := startFed(t, testCfg(t, clock))
	f.register(t, "site-a", "site-b", "site-c")
	for _, n := range []string{"site-a", "site-b", "site-c"} {
		heartbeat(t, f, n, false)
	}
	id := f.submitJob(t, `{"name": "logs", "envoys": ["site-a", "site-b"], "rounds": 1, "train": {"command": ["true"]}}`)
	if got := f.waitFor(t, "site-a"); got != id {
		t.Fatalf("site-a's work: got %s, want %s", got, id)
	}

	for _, tt := range []struct {
		name string
		msgs []*logspb.TrainingLogChunk
		want codes.Code
	}{
		{"not a participant", []*logspb.TrainingLogChunk{{Header: logHeader("site-c", id, 3), Data: []byte("hi\n")}}, codes.PermissionDenied},
		{"no such job", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", "no-such-job", 3), Data: []byte("hi\n")}}, codes.NotFound},
		{"over the cap", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", id, api.MaxSharedLog+1)}}, codes.ResourceExhausted},
		{"no header", []*logspb.TrainingLogChunk{{Data: []byte("hi\n")}}, codes.InvalidArgument},
		{"longer than announced", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", id, 2), Data: []byte("hi\n")}}, codes.InvalidArgument},
		{"shorter than announced", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", id, 9), Data: []byte("hi\n")}}, codes.DataLoss},
		{"a second header", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", id, 6), Data: []byte("hi\n")}, {Header: logHeader("site-a", id, 6), Data: []byte("ho\n")}}, codes.InvalidArgument},
		{"in two chunks", []*logspb.TrainingLogChunk{{Header: logHeader("site-a", id, 14), Data: []byte("epoch 1\n")}, {Data: []byte("loss 2")}}, codes.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(sendLogChunks(f.c, tt.msgs...)); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}

	// site-a's copy is there; it does not share (its heartbeat says so),
	// so nothing is asked of it and the copy is returned as it is.
	reply, l := getLog(t, f, id, "site-a")
	if reply.Status() != adminproto.StatusOK || string(l.Data) != "epoch 1\nloss 2" || l.Envoy != "site-a" || l.JobID != id || l.Fresh || l.Size != 14 {
		t.Fatalf("get_log site-a: %s %q, log %+v", reply.Status(), reply.Info(), l)
	}
	for _, tt := range []struct{ envoy, want string }{
		{"site-b", "site-b does not share training logs (its site policy, or envoy start --share-logs)"},
		{"site-c", "site-c took no part in job " + id},
		{"../x", "envoy"},
	} {
		if reply, _ := getLog(t, f, id, tt.envoy); reply.Status() == adminproto.StatusOK || !strings.Contains(reply.Info(), tt.want) {
			t.Errorf("get_log %s: %s %q, want a refusal with %q", tt.envoy, reply.Status(), reply.Info(), tt.want)
		}
	}

	// Once site-a shares logs, get_log asks it for a fresh copy in its
	// next heartbeat reply and waits for it.
	heartbeat(t, f, "site-a", true)
	type got struct {
		reply *adminproto.Message
		log   api.TrainingLog
	}
	done := make(chan got, 1)
	go func() {
		reply, l := getLog(t, f, id, "site-a")
		done <- got{reply, l}
	}()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat reply asked for the log within 30s")
		}
		if asked := heartbeat(t, f, "site-a", true); len(asked) > 0 {
			if asked[0] != id {
				t.Fatalf("heartbeat reply asks for %q, want %q", asked, id)
			}
			break
		}
		time.Sleep(10 * time.Millisecond) // get_log has not asked yet
	}
	if err := sendLogChunks(f.c, &logspb.TrainingLogChunk{Header: logHeader("site-a", id, 7), Data: []byte("fresh!\n")}); err != nil {
		t.Fatal(err)
	}
	g := <-done
	if g.reply.Status() != adminproto.StatusOK || string(g.log.Data) != "fresh!\n" || !g.log.Fresh {
		t.Fatalf("get_log after asking: %s %q, log %+v", g.reply.Status(), g.reply.Info(), g.log)
	}

	// site-b shares, but is offline: nothing is asked, there is no copy.
	heartbeat(t, f, "site-b", true)
	clock.Add(time.Hour)
	if reply, _ := getLog(t, f, id, "site-b"); !strings.Contains(reply.Info(), "no log from site-b yet") {
		t.Errorf("get_log site-b: %s %q, want no log yet", reply.Status(), reply.Info())
	}

	do(t, f.admin, api.CmdAbortJob+" "+id)
	if reply := do(t, f.admin, api.CmdDeleteJob+" "+id); reply.Status() != adminproto.StatusOK {
		t.Fatalf("delete_job: %s %q", reply.Status(), reply.Info())
	}
	if _, err := os.Stat(filepath.Join(f.d.Config().DataDir, "logs", id)); !os.IsNotExist(err) {
		t.Errorf("logs after delete_job: got %v, want them gone", err)
	}
}
