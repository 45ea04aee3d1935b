package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/admin"
	"github.com/fedplane/fedplane/director/openfl"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// methodNames lists the full names of every method the real gRPC server
// registers.
func methodNames(s *grpc.Server) []string {
	var out []string
	for svc, info := range s.GetServiceInfo() {
		for _, m := range info.Methods {
			out = append(out, "/"+svc+"/"+m.Name)
		}
	}
	sort.Strings(out)
	return out
}

// TestEveryMethodAndCommandInTheTable walks what the director really
// serves, both OpenFL services and the admin commands, and fails on
// anything the authorization table does not name: a new RPC or command
// cannot ship without a rule.
func TestEveryMethodAndCommandInTheTable(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	names := append(methodNames(openfl.NewServer(d, openfl.Config{})), admin.New(d, admin.Config{}).CommandNames()...)
	if len(names) < 30 {
		t.Fatalf("walked only %d methods and commands: %v", len(names), names)
	}
	for _, name := range names {
		if _, ok := director.RuleOf(name); !ok {
			t.Errorf("%s is not in the authorization table (director/auth.go)", name)
		}
	}
}

// tlsFed is a director served with mutual TLS on loopback: gRPC and the
// admin port, and clients for each identity of the federation's PKI.
type tlsFed struct {
	p         *pkitest.PKI
	d         *director.Director
	grpcAddr  string
	adminAddr string
}

func startTLSFed(t *testing.T) *tlsFed {
	t.Helper()
	p := pkitest.New(t)
	d := mustNew(t, testCfg(t, newFakeClock()))
	lis, adminLis := pkitest.Listen(t, nil), pkitest.Listen(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, d, Config{TLS: p.ServerTLS()}, lis, adminLis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &tlsFed{p: p, d: d, grpcAddr: lis.Addr().String(), adminAddr: adminLis.Addr().String()}
}

// clients dials the gRPC port with name's certificate.
func (f *tlsFed) clients(t *testing.T, name string) clients {
	t.Helper()
	conn, err := grpc.NewClient(f.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(f.p.ClientTLS(name))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{dir: directorpb.NewDirectorClient(conn), agg: aggregatorpb.NewAggregatorClient(conn), log: logspb.NewTrainingLogsClient(conn), xfr: transferspb.NewTransfersClient(conn)}
}

// admin is an admin client with name's certificate, as fladmin builds it.
func (f *tlsFed) admin(name string) *adminproto.Client {
	cfg := f.p.ClientTLS(name)
	cfg.NextProtos = []string{adminproto.ALPN}
	return &adminproto.Client{Addr: f.adminAddr, Timeout: 10 * time.Second, Dial: (&tls.Dialer{Config: cfg}).DialContext}
}

// The identities of the matrix: every admin role, an envoy acting as
// itself (site-a), and an envoy whose requests name another (site-b, whose
// requests all name site-a).
const (
	boss   = "boss"   // project_admin
	lead1  = "lead1"  // lead; submitted both jobs
	lead2  = "lead2"  // lead; the jobs are another's
	viewer = "viewer" // member
	siteA  = "site-a" // envoy, names itself
	siteB  = "site-b" // envoy, names site-a
)

var identities = []string{boss, lead1, lead2, viewer, siteA, siteB}

// sendResults streams a minimal TaskResults from sender for round of
// experiment id.
func sendResults(c clients, sender, id string, round int32) error {
	var file bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&file, map[string][]float32{"b": {0, 0}}, map[string][]int64{"b": {2}}); err != nil {
		return err
	}
	x, _, err := tensor.ReadSafetensors(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		return err
	}
	stream, err := c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		return err
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	_, err = tensor.WriteTaskResults(w, tensor.TaskResultsHeader{Sender: sender, Receiver: "director", FederationUUID: id, Round: round, TaskName: "train", DataSize: 1}, x, nil)
	if err == nil {
		err = w.Close()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	// io.EOF from Send means the server has ended the stream: its status
	// comes with the reply.
	_, err = stream.CloseAndRecv()
	return err
}

// sendLog uploads log as envoy's training log of experiment id, in one
// message.
func sendLog(c clients, envoy, id string, log []byte) error {
	stream, err := c.log.SendTrainingLog(context.Background())
	if err != nil {
		return err
	}
	err = stream.Send(&logspb.TrainingLogChunk{
		Header: &logspb.TrainingLogHeader{EnvoyName: envoy, ExperimentName: id, Size: int64(len(log))},
		Data:   log,
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// drain reads a server stream to its end.
func drain[T any](stream grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// TestRoleMatrix calls every gRPC method and every admin command as every
// kind of identity, against a director served with mutual TLS, and checks
// that exactly the identities the table admits get past authorization:
// the others are refused with PermissionDenied (gRPC) or not_authorized
// (admin). Allowed calls may still fail for other reasons (a finished job
// cannot be aborted); that is not what is tested here.
func TestRoleMatrix(t *testing.T) {
	f := startTLSFed(t)
	f.p.Admin(boss, pki.RoleProjectAdmin)
	f.p.Admin(lead1, pki.RoleLead)
	f.p.Admin(lead2, pki.RoleLead)
	f.p.Admin(viewer, pki.RoleMember)
	f.p.Envoy(siteA)
	f.p.Envoy(siteB)
	ctx := context.Background()
	cs := map[string]clients{}
	for _, n := range identities {
		cs[n] = f.clients(t, n)
	}

	// Job 1 (lead1's) runs its one round on site-a and finishes; job 2
	// (lead1's) then runs on site-a, so that envoy calls have work.
	a := &fed{d: f.d, c: cs[siteA], admin: f.admin(lead1)}
	a.register(t, siteA)
	if _, err := cs[siteB].dir.UpdateShardInfo(ctx, shard(siteB, 10, []string{"28", "28"}, []string{"1"})); err != nil {
		t.Fatal(err)
	}
	job1 := a.submitJob(t, `{"name": "one", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`)
	if got := a.waitFor(t, siteA); got != job1 {
		t.Fatalf("site-a's work: got %s, want %s", got, job1)
	}
	if err := a.train(t, siteA, job1, 1, 10); err != nil {
		t.Fatal(err)
	}
	a.settle(t)
	job2 := a.submitJob(t, `{"name": "two", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`)
	if got := a.waitFor(t, siteA); got != job2 {
		t.Fatalf("site-a's work: got %s, want %s", got, job2)
	}

	// site-a holds a cut results upload of job 2, whose offset only it
	// may ask.
	held := newUpload(t, resultsBytes(t, siteA, job2, 0, map[string][]float32{"w": {1, 2, 3, 4, 5, 6}, "b": {1, 1}}, map[string][]int64{"w": {2, 3}, "b": {2}}))
	if _, err := held.send(cs[siteA], 0, len(held.body)/2); status.Code(err) != codes.DataLoss {
		t.Fatalf("cut results upload: got %v, want DataLoss", err)
	}

	var (
		all        = identities
		envoyOnly  = []string{siteA}
		admins     = []string{boss, lead1, lead2, viewer}
		submitters = []string{boss, lead1, lead2}
		managers   = []string{boss, lead1}
	)
	h := func(id string) *aggregatorpb.MessageHeader { return hdr(siteA, id) }
	grpcCases := []struct {
		method  string
		allowed []string
		call    func(c clients) error
	}{
		{directorpb.Director_UpdateShardInfo_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.dir.UpdateShardInfo(ctx, shard(siteA, 10, []string{"28", "28"}, []string{"1"}))
			return err
		}},
		{directorpb.Director_UpdateEnvoyStatus_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: siteA, IsExperimentRunning: true})
			return err
		}},
		{directorpb.Director_WaitExperiment_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.dir.WaitExperiment(ctx, &directorpb.WaitExperimentRequest{CollaboratorName: siteA})
			return err
		}},
		{directorpb.Director_GetExperimentData_FullMethodName, envoyOnly, func(c clients) error {
			return drain(c.dir.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: job2, CollaboratorName: siteA}))
		}},
		{directorpb.Director_SetExperimentFailed_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.dir.SetExperimentFailed(ctx, &directorpb.SetExperimentFailedRequest{ExperimentName: "no-such-experiment", CollaboratorName: siteA})
			return err
		}},
		{aggregatorpb.Aggregator_GetTasks_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: h(job2)})
			return err
		}},
		{aggregatorpb.Aggregator_GetAggregatedTensor_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: h(job2), TensorName: "w"})
			return err
		}},
		{aggregatorpb.Aggregator_SendLocalTaskResults_FullMethodName, envoyOnly, func(c clients) error {
			return sendResults(c, siteA, job2, 7) // a round that is not the current one
		}},
		{logspb.TrainingLogs_SendTrainingLog_FullMethodName, envoyOnly, func(c clients) error {
			return sendLog(c, siteA, job2, []byte("epoch 1\n"))
		}},
		{transferspb.Transfers_ResultsOffset_FullMethodName, envoyOnly, func(c clients) error {
			_, err := c.xfr.ResultsOffset(ctx, &transferspb.ResultsOffsetRequest{UploadId: held.id})
			return err
		}},
		{directorpb.Director_GetEnvoys_FullMethodName, all, func(c clients) error {
			_, err := c.dir.GetEnvoys(ctx, &directorpb.GetEnvoysRequest{})
			return err
		}},
		{directorpb.Director_GetDatasetInfo_FullMethodName, all, func(c clients) error {
			_, err := c.dir.GetDatasetInfo(ctx, &directorpb.GetDatasetInfoRequest{})
			return err
		}},
		{directorpb.Director_GetExperimentsList_FullMethodName, admins, func(c clients) error {
			_, err := c.dir.GetExperimentsList(ctx, &directorpb.GetExperimentsListRequest{})
			return err
		}},
		{directorpb.Director_GetExperimentDescription_FullMethodName, admins, func(c clients) error {
			_, err := c.dir.GetExperimentDescription(ctx, &directorpb.GetExperimentDescriptionRequest{Name: job1})
			return err
		}},
		{aggregatorpb.Aggregator_GetExperimentDescription_FullMethodName, admins, func(c clients) error {
			_, err := c.agg.GetExperimentDescription(ctx, &aggregatorpb.GetExperimentDescriptionRequest{Name: job1})
			return err
		}},
		{directorpb.Director_GetExperimentStatus_FullMethodName, admins, func(c clients) error {
			_, err := c.dir.GetExperimentStatus(ctx, &directorpb.GetExperimentStatusRequest{ExperimentName: job1})
			return err
		}},
		{directorpb.Director_GetMetricStream_FullMethodName, admins, func(c clients) error {
			return drain(c.dir.GetMetricStream(ctx, &directorpb.GetMetricStreamRequest{ExperimentName: job1}))
		}},
		{aggregatorpb.Aggregator_GetMetricStream_FullMethodName, admins, func(c clients) error {
			return drain(c.agg.GetMetricStream(ctx, &aggregatorpb.GetMetricStreamRequest{ExperimentName: job1}))
		}},
		{directorpb.Director_SetNewExperiment_FullMethodName, submitters, func(c clients) error {
			stream, err := c.dir.SetNewExperiment(ctx)
			if err != nil {
				return err
			}
			_, err = stream.CloseAndRecv() // no archive: refused after authorization
			return err
		}},
		{directorpb.Director_GetTrainedModel_FullMethodName, managers, func(c clients) error {
			_, err := c.dir.GetTrainedModel(ctx, &directorpb.GetTrainedModelRequest{ExperimentName: job1})
			return err
		}},
		{aggregatorpb.Aggregator_GetTrainedModel_FullMethodName, managers, func(c clients) error {
			_, err := c.agg.GetTrainedModel(ctx, &aggregatorpb.GetTrainedModelRequest{ExperimentName: job1})
			return err
		}},
		{directorpb.Director_RemoveExperimentData_FullMethodName, managers, func(c clients) error {
			_, err := c.dir.RemoveExperimentData(ctx, &directorpb.RemoveExperimentRequest{ExperimentName: job2}) // running: not removed
			return err
		}},
	}
	var covered []string
	for _, tc := range grpcCases {
		covered = append(covered, tc.method)
		for _, who := range identities {
			t.Run(strings.TrimPrefix(tc.method, "/openfl.")+"/"+who, func(t *testing.T) {
				err := tc.call(cs[who])
				want := slices.Contains(tc.allowed, who)
				if denied := status.Code(err) == codes.PermissionDenied; denied == want {
					t.Fatalf("got %v, want allowed=%v", err, want)
				}
			})
		}
	}
	sort.Strings(covered)
	if want := methodNames(openfl.NewServer(f.d, openfl.Config{})); !slices.Equal(covered, want) {
		t.Errorf("the matrix covers %v, the server serves %v", covered, want)
	}

	adminCases := []struct {
		command string
		allowed []string
		call    func(c *adminproto.Client) (*adminproto.Message, error)
	}{
		{api.CmdListJobs, admins, text(api.CmdListJobs)},
		{api.CmdGetJobMeta, admins, text(api.CmdGetJobMeta + " " + job1)},
		{api.CmdGetMetrics, admins, text(api.CmdGetMetrics + " " + job1)},
		{api.CmdListEnvoys, admins, text(api.CmdListEnvoys)},
		{api.CmdGetEvents, admins, text(api.CmdGetEvents + " -j " + job1)},
		{api.CmdGetAudit, []string{boss}, text(api.CmdGetAudit + " -c " + lead1)},
		{api.CmdCheckStatus, admins, text(api.CmdCheckStatus)},
		{api.CmdSubmitJob, submitters, func(c *adminproto.Client) (*adminproto.Message, error) {
			body := []byte("not a zip")
			return c.Upload(ctx, adminproto.NewRequest(api.CmdSubmitJob), uint64(len(body)), bytes.NewReader(body))
		}},
		{api.CmdUploadStatus, submitters, text(api.CmdUploadStatus + " " + strings.Repeat("0", 32))}, // none held: refused, but not denied
		{api.CmdAbortJob, managers, text(api.CmdAbortJob + " " + job1)},                              // finished: not aborted
		{api.CmdDeleteJob, managers, text(api.CmdDeleteJob + " " + job2)},                            // running: not deleted
		{api.CmdDownloadJobZip, managers, func(c *adminproto.Client) (*adminproto.Message, error) {
			return c.Download(ctx, adminproto.NewRequest(api.CmdDownloadJobZip+" "+job1), 1<<30, io.Discard)
		}},
		{api.CmdDownloadJob, managers, text(api.CmdDownloadJob + " " + job1)},
		{api.CmdGetLog, managers, text(api.CmdGetLog + " " + job1 + " " + siteA)}, // site-a does not share logs: refused, not denied
		{api.CmdDownloadJobFile, submitters, text( // the transaction is the caller's own: its job was checked by download_job
			api.CmdDownloadJobFile + " 00000000000000000000000000000000 " + job1 + " job.json end")},
		{api.CmdCertLogin, admins, text(api.CmdCertLogin + " someone")}, // not the caller: refused, but not denied
		{api.CmdCommands, admins, text(api.CmdCommands)},
		{api.CmdCheckSession, admins, text(api.CmdCheckSession)},
		{api.CmdLogout, admins, text(api.CmdLogout)},
		{api.CmdRemoveEnvoy, []string{boss}, text(api.CmdRemoveEnvoy + " no-such-envoy")},
		{api.CmdConsoleLogin, admins, text(api.CmdConsoleLogin)}, // no console here: refused, but not denied
	}
	covered = covered[:0]
	for _, tc := range adminCases {
		covered = append(covered, tc.command)
		for _, who := range identities {
			t.Run(tc.command+"/"+who, func(t *testing.T) {
				reply, err := tc.call(f.admin(who))
				if err != nil {
					t.Fatal(err)
				}
				want := slices.Contains(tc.allowed, who)
				if denied := reply.Status() == adminproto.StatusNotAuthorized; denied == want {
					t.Fatalf("got %s %q, want allowed=%v", reply.Status(), reply.Info(), want)
				}
			})
		}
	}
	sort.Strings(covered)
	if want := admin.New(f.d, admin.Config{}).CommandNames(); !slices.Equal(covered, want) {
		t.Errorf("the matrix covers %v, the admin port answers %v", covered, want)
	}
	checkAuditTrail(t, f.d, job1)
}

// checkAuditTrail checks what the role matrix left in the audit trail:
// admins' calls on both ports with role, target and outcome, every refused
// call whoever made it, and none of an envoy's own work.
func checkAuditTrail(t *testing.T, d *director.Director, job1 string) {
	t.Helper()
	d.FlushJournal()
	trail, err := d.Audit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	find := func(caller, action string, match func(a api.AuditRecord) bool) bool {
		for _, a := range trail {
			if a.Caller == caller && a.Action == action && match(a) {
				return true
			}
		}
		return false
	}
	denied := func(a api.AuditRecord) bool { return a.Outcome == codes.PermissionDenied.String() && a.Detail != "" }
	cases := []struct {
		what   string
		caller string
		action string
		match  func(a api.AuditRecord) bool
		want   bool
	}{
		{"a frontend call with its role and what it named", boss, directorpb.Director_GetExperimentDescription_FullMethodName,
			func(a api.AuditRecord) bool {
				return a.Channel == api.AuditGRPC && a.Role == pki.RoleProjectAdmin && a.Target == "name="+job1 && a.Remote == "127.0.0.1"
			}, true},
		{"a member refused a model", viewer, directorpb.Director_GetTrainedModel_FullMethodName, denied, true},
		{"an envoy refused a frontend call", siteA, directorpb.Director_GetExperimentsList_FullMethodName, denied, true},
		{"an admin refused an envoy's call", boss, directorpb.Director_UpdateEnvoyStatus_FullMethodName, denied, true},
		{"an envoy's heartbeat", siteA, directorpb.Director_UpdateEnvoyStatus_FullMethodName, func(api.AuditRecord) bool { return true }, false},
		{"an envoy's reading of federation facts", siteA, directorpb.Director_GetEnvoys_FullMethodName, func(api.AuditRecord) bool { return true }, false},
		{"an admin command refused", viewer, api.CmdRemoveEnvoy,
			func(a api.AuditRecord) bool {
				return a.Channel == api.AuditAdmin && a.Outcome == adminproto.StatusNotAuthorized && a.Target == "no-such-envoy"
			}, true},
		{"an admin command", lead1, api.CmdGetEvents,
			func(a api.AuditRecord) bool { return a.Outcome == adminproto.StatusOK && a.Role == pki.RoleLead }, true},
	}
	for _, tc := range cases {
		if got := find(tc.caller, tc.action, tc.match); got != tc.want {
			t.Errorf("audit trail: %s (%s, %s): found %v, want %v", tc.what, tc.caller, tc.action, got, tc.want)
		}
	}
}

// text sends a text command.
func text(command string) func(c *adminproto.Client) (*adminproto.Message, error) {
	return func(c *adminproto.Client) (*adminproto.Message, error) {
		return c.Do(context.Background(), adminproto.NewRequest(command))
	}
}
