package server

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
)

// workspacePlan is plan/plan.yaml as OpenFL 1.6's frontend writes it
// (experiment.py _prepare_plan, Plan.dump of a parsed plan: the defaults
// of plan/defaults/*.yaml merged in), with the tasks section of
// tasks_torch.yaml.
const workspacePlan = `aggregator:
  settings:
    best_state_path: save/best.pbuf
    db_store_rounds: 2
    init_state_path: save/init.pbuf
    last_state_path: save/last.pbuf
    rounds_to_train: 2
    write_logs: true
  template: openfl.component.Aggregator
assigner:
  settings:
    task_groups:
    - name: train_and_validate
      percentage: 1.0
      tasks:
      - aggregated_model_validation
      - train
      - locally_tuned_model_validation
  template: openfl.component.RandomGroupedAssigner
collaborator:
  settings:
    db_store_rounds: 1
    delta_updates: false
    opt_treatment: RESET
    device_assignment_policy: CPU_ONLY
  template: openfl.component.Collaborator
network:
  settings:
    agg_addr: localhost
    tls: true
  template: openfl.federation.Network
task_runner:
  template: openfl.federated.task.task_runner.CoreTaskRunner
tasks:
  aggregated_model_validation:
    function: validate_task
    kwargs:
      apply: global
      metrics:
      - acc
  locally_tuned_model_validation:
    function: validate_task
    kwargs:
      apply: local
      metrics:
      - acc
  settings: {}
  train:
    function: train_task
    kwargs:
      epochs: 1
      metrics:
      - loss
`

// workspaceArchive zips a workspace as shutil.make_archive does for the
// frontend: folder entries, the plan, the pickled interface objects.
func workspaceArchive(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"plan/", "plan/plan.yaml", "model_obj.pkl", "requirements.txt"} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "plan/plan.yaml" {
			w.Write([]byte(workspacePlan))
		} else if name != "plan/" {
			w.Write([]byte("not read by the director"))
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sendResults streams TaskResults as AggregatorGRPCClient does.
func (c *collaborator) sendResults(t *testing.T, f *fed, res *aggregatorpb.TaskResults) {
	t.Helper()
	b, err := proto.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&basepb.DataStream{Size: uint32(len(b)), Npbytes: b}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("%s: SendLocalTaskResults of %s, round %d: %v", c.name, res.GetTaskName(), res.GetRoundNumber(), err)
	}
	c.checkHeader(t, "SendLocalTaskResults", resp.GetHeader())
}

// validate runs a validation task: its one metric, acc, goes out as a
// report tensor with the validation data size, as collaborator.py sends it.
func (c *collaborator) validate(t *testing.T, f *fed, round int32, task, tag string, dataSize int32, acc float32) {
	t.Helper()
	c.sendResults(t, f, &aggregatorpb.TaskResults{Header: c.header(), RoundNumber: round, TaskName: task, DataSize: dataSize,
		Tensors: []*basepb.NamedTensor{namedTensor("acc", round, true, true, []string{"compressed", "metric", tag}, nil, acc)}})
}

func taskNames(resp *aggregatorpb.GetTasksResponse) []string {
	var out []string
	for _, t := range resp.GetTasks() {
		out = append(out, t.GetName())
	}
	return out
}

// TestOpenFLWorkspaceTaskGroup submits an OpenFL workspace as OpenFL's
// frontend does and plays two collaborators through two rounds of its
// default task group: each round's three tasks in order from GetTasks,
// the round closing only after both reported all three, the validation
// metrics recorded per round and the experiment finishing with the
// averaged model.
func TestOpenFLWorkspaceTaskGroup(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b")
	zb := workspaceArchive(t)
	s, err := f.c.dir.SetNewExperiment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	model := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
		namedTensor("w", 0, false, true, []string{"model"}, []int32{2}, 1, 2),
		namedTensor("b", 0, false, true, []string{"model"}, []int32{1}, 0.5),
	}}
	if err := s.Send(&directorpb.ExperimentInfo{Name: "workspace-exp", CollaboratorNames: []string{"site-a", "site-b"}, ModelProto: model,
		ExperimentData: &directorpb.ExperimentData{Size: uint32(len(zb)), Npbytes: zb}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	id := f.waitFor(t, "site-a")
	a := &collaborator{name: "site-a", fed: id, model: map[string][]float32{}}
	b := &collaborator{name: "site-b", fed: id, model: map[string][]float32{}}

	wantTasks := []*aggregatorpb.Task{
		{Name: "aggregated_model_validation", FunctionName: "validate_task", TaskType: "validate"},
		{Name: "train", FunctionName: "train_task", TaskType: "train"},
		{Name: "locally_tuned_model_validation", FunctionName: "validate_task", TaskType: "validate", ApplyLocal: true},
	}
	// The frontend's view lists the plan's tasks.
	list, err := f.c.dir.GetExperimentsList(ctx, &directorpb.GetExperimentsListRequest{})
	if err != nil || len(list.GetExperiments()) != 1 || list.GetExperiments()[0].GetTasksAmount() != 3 {
		t.Fatalf("experiments list: %v, %v; want one with 3 tasks", list, err)
	}
	desc, err := f.c.dir.GetExperimentDescription(ctx, &directorpb.GetExperimentDescriptionRequest{Name: "workspace-exp"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, task := range desc.GetExperiment().GetTasks() {
		names = append(names, task.GetName())
	}
	if !slices.Equal(names, []string{wantTasks[0].Name, wantTasks[1].Name, wantTasks[2].Name}) {
		t.Fatalf("described tasks %v", names)
	}
	const agg, local = "aggregated_model_validation", "locally_tuned_model_validation"
	steps := [][2]float32{{1, 3}, {1, -1}}
	for round := int32(0); round < 2; round++ {
		for i, c := range []*collaborator{a, b} {
			resp := c.getTasks(t, f)
			if resp.GetRoundNumber() != round || len(resp.GetTasks()) != 3 {
				t.Fatalf("%s round %d: GetTasks: got %v", c.name, round, resp)
			}
			for j, task := range resp.GetTasks() {
				if !proto.Equal(task, wantTasks[j]) {
					t.Fatalf("%s round %d: task %d: got %v, want %v", c.name, round, j, task, wantTasks[j])
				}
			}
			// The tasks in order, as Collaborator.run does them; GetTasks
			// between them hands out only the ones not yet reported.
			c.fetch(t, f, round)
			dataSize := int32(1 + 2*i)
			c.validate(t, f, round, agg, "validate_agg", dataSize, float32(round*10+1+int32(i)))
			if got := taskNames(c.getTasks(t, f)); !slices.Equal(got, []string{"train", local}) {
				t.Fatalf("%s round %d after %s: got tasks %q", c.name, round, agg, got)
			}
			c.train(t, f, round, steps[round][i], dataSize)
			resp = c.getTasks(t, f)
			if got := taskNames(resp); !slices.Equal(got, []string{local}) || resp.GetRoundNumber() != round {
				t.Fatalf("%s round %d after train: got %v", c.name, round, resp)
			}
			if i == 1 {
				// Both trained, one validation missing: the round is open.
				f.settle(t)
				if resp := a.getTasks(t, f); resp.GetRoundNumber() != round || resp.GetSleepTime() <= 0 || len(resp.GetTasks()) != 0 || resp.GetQuit() {
					t.Fatalf("site-a while site-b validates round %d: got %v, want sleep in round %d", round, resp, round)
				}
			}
			c.validate(t, f, round, local, "validate_local", dataSize, float32(round*10+5+int32(i)))
			if i == 0 {
				if resp := c.getTasks(t, f); resp.GetSleepTime() <= 0 || len(resp.GetTasks()) != 0 || resp.GetQuit() || resp.GetRoundNumber() != round {
					t.Fatalf("%s after its tasks of round %d: got %v, want sleep", c.name, round, resp)
				}
			}
		}
		f.settle(t)
	}
	checkFinished(t, f, id, "workspace-exp", map[string][]float32{"b": {2.5}, "w": {3, 4}}, a, b)
	ms, err := f.db.Metrics(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, m := range ms {
		k := fmt.Sprintf("%s/%s/%s/%d", m.Origin, m.Task, m.Name, m.Round)
		if _, dup := got[k]; dup {
			t.Errorf("metric %s recorded twice", k)
		}
		got[k] = m.Value
	}
	// acc of a is 10*round+1 (global) and +5 (local), b's one more; the
	// aggregator's is their mean weighted 1:3 by the validation data size.
	wantMetrics := map[string]float64{
		"site-a/aggregated_model_validation/acc/0":        1,
		"site-b/aggregated_model_validation/acc/0":        2,
		"aggregator/aggregated_model_validation/acc/0":    1.75,
		"site-a/locally_tuned_model_validation/acc/0":     5,
		"aggregator/locally_tuned_model_validation/acc/0": 5.75,
		"site-b/aggregated_model_validation/acc/1":        12,
		"aggregator/aggregated_model_validation/acc/1":    11.75,
		"aggregator/locally_tuned_model_validation/acc/1": 15.75,
		"site-a/train/loss/0":                             0.1,
		"aggregator/train/loss/1":                         0.25,
	}
	for k, v := range wantMetrics {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-6 {
			t.Errorf("metric %s: got %v (%v), want %v (all: %v)", k, g, ok, v, got)
		}
	}
	// 2 rounds × (2 sites + aggregator) × 3 tasks' metrics.
	if len(got) != 18 {
		t.Errorf("got %d metrics, want 18: %v", len(got), got)
	}
}

// TestWorkspaceOnlyThroughTheFrontend: an OpenFL workspace submitted as a
// fedplane job (fladmin submit-job, the admin port's path) is refused: only
// OpenFL's frontend names the collaborators that run its tasks.
func TestWorkspaceOnlyThroughTheFrontend(t *testing.T) {
	f := startFed(t, testCfg(t, newFakeClock()))
	zb := workspaceArchive(t)
	u, err := f.d.ReceiveArchive(func(w io.Writer) (int64, error) { n, err := w.Write(zb); return int64(n), err })
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.d.SubmitJob(context.Background(), director.Caller{Name: "admin", Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}, u, director.Submission{})
	if !errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), "submit it with OpenFL's frontend") {
		t.Fatalf("workspace through submit_job: %v, want invalid job saying to use OpenFL's frontend", err)
	}
}
