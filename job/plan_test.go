package job_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/job"
)

const planRounds = "aggregator:\n  settings:\n    rounds_to_train: 3\n"

var defaultTasks = []job.Task{
	{Name: "aggregated_model_validation", Function: "aggregated_model_validation", Type: "validate"},
	{Name: "train", Function: "train", Type: "train"},
	{Name: "locally_tuned_model_validation", Function: "locally_tuned_model_validation", Type: "validate", ApplyLocal: true},
}

func TestParsePlan(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		tasks []job.Task
		delta bool
	}{
		{name: "no assigner: OpenFL's default group", in: planRounds, tasks: defaultTasks},
		{name: "unresolved defaults file", in: planRounds + "assigner:\n  defaults: plan/defaults/assigner.yaml\n", tasks: defaultTasks},
		{name: "resolved default group with functions", in: planRounds + `assigner:
  template: openfl.component.RandomGroupedAssigner
  settings:
    task_groups:
    - name: train_and_validate
      percentage: 1.0
      tasks: [aggregated_model_validation, train, locally_tuned_model_validation]
tasks:
  settings: {}
  aggregated_model_validation: {function: validate_task, kwargs: {apply: global, metrics: [acc]}}
  locally_tuned_model_validation: {function: validate_task, kwargs: {apply: local, metrics: [acc]}}
  train: {function: train_task, kwargs: {metrics: [loss], epochs: 1}}
collaborator:
  settings: {delta_updates: true, opt_treatment: RESET}
`, delta: true, tasks: []job.Task{
			{Name: "aggregated_model_validation", Function: "validate_task", Type: "validate"},
			{Name: "train", Function: "train_task", Type: "train"},
			{Name: "locally_tuned_model_validation", Function: "validate_task", Type: "validate", ApplyLocal: true},
		}},
		{name: "custom group, type from kwargs.apply", in: planRounds + `assigner:
  settings:
    task_groups:
    - {name: g, percentage: 1, tasks: [train, check]}
tasks:
  train: {function: fit_fn}
  check: {function: eval_fn, kwargs: {apply: local}}
`, tasks: []job.Task{
			{Name: "train", Function: "fit_fn", Type: "train"},
			{Name: "check", Function: "eval_fn", Type: "validate", ApplyLocal: true},
		}},
		{name: "custom group of the interactive API's names", in: planRounds + `assigner:
  settings:
    task_groups:
    - {name: g, percentage: 0.995, tasks: [train, locally_tuned_model_validate, aggregated_model_validate]}
`, tasks: []job.Task{
			{Name: "train", Function: "train", Type: "train"},
			{Name: "locally_tuned_model_validate", Function: "locally_tuned_model_validate", Type: "validate", ApplyLocal: true},
			{Name: "aggregated_model_validate", Function: "aggregated_model_validate", Type: "validate"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := job.ParsePlan([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if m.Rounds != 3 || m.OpenFL == nil || m.OpenFL.DeltaUpdates != tt.delta {
				t.Fatalf("got rounds %d, openfl %+v", m.Rounds, m.OpenFL)
			}
			if !reflect.DeepEqual(m.OpenFL.Tasks, tt.tasks) {
				t.Errorf("tasks: got %+v, want %+v", m.OpenFL.Tasks, tt.tasks)
			}
			checkStored(t, m)
		})
	}
}

// checkStored gives the manifest what a frontend's submission does, then
// checks it validates and survives the director's store (JSON, reparsed
// strictly).
func checkStored(t *testing.T, m *job.Manifest) {
	t.Helper()
	m.Name, m.Envoys = "exp", []string{"site-a"}
	if err := m.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := job.ParseManifest(b)
	if err != nil {
		t.Fatalf("reparse %s: %v", b, err)
	}
	if !reflect.DeepEqual(m, m2) {
		t.Fatalf("got %+v after a round trip, want %+v", m2, m)
	}
}

var planErrorCases = []struct {
	name, in, want string
}{
	{"empty", "", "the file is empty"},
	{"bad YAML", "aggregator: [", "not valid YAML"},
	{"not a mapping", "- a\n- b\n", "not valid YAML"},
	{"too large", planRounds + "#" + strings.Repeat("x", job.MaxPlanSize), "exceeds the limit"},
	{"no rounds", "assigner: {}\n", "aggregator.settings.rounds_to_train is not set"},
	{"zero rounds", "aggregator: {settings: {rounds_to_train: 0}}\n", "rounds_to_train must be 1 to"},
	{"other assigner", planRounds + "assigner: {template: openfl.component.StaticGroupedAssigner}\n", `assigner.template "openfl.component.StaticGroupedAssigner" is not supported`},
	{"other defaults", planRounds + "assigner: {defaults: plan/mine.yaml}\n", `assigner.defaults "plan/mine.yaml" is not supported`},
	{"refused settings", planRounds + "assigner:\n  settings:\n    task_groups: []\n    seed: 1\n    authorized_cols: [a]\n", `assigner.settings "authorized_cols", "seed" not supported`},
	{"no groups", planRounds + "assigner: {settings: {task_groups: []}}\n", "task_groups is empty"},
	{"two groups", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 0.5, tasks: [train]}, {name: b, percentage: 0.5, tasks: [train]}]}}\n", "has 2 groups"},
	{"half percentage", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 0.5, tasks: [train]}]}}\n", `group "a" has percentage 0.5`},
	{"group without tasks", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1}]}}\n", `group "a" has no tasks`},
	{"groups not a list", planRounds + "assigner: {settings: {task_groups: {name: a}}}\n", "assigner.settings.task_groups: "},
	{"task twice", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [train, train]}]}}\n", `task "train" appears twice`},
	{"bad task name", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [train, \"../x\"]}]}}\n", "task 1 of the group"},
	{"untyped task", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [train, fit]}]}}\n", `task "fit": neither its name`},
	{"bad apply", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [train, check]}]}}\ntasks: {check: {kwargs: {apply: both}}}\n", `tasks.check.kwargs.apply must be local or global, got "both"`},
	{"bad function", planRounds + "tasks: {train: {function: \"a b/c\"}}\n", "tasks.train.function"},
	{"task settings not a mapping", planRounds + "tasks: {train: [1]}\n", "tasks.train: "},
	{"no train task", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [validate]}]}}\n", "no train task"},
	{"two train tasks", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [train, train_more]}]}}\n", `2 train tasks ("train", "train_more")`},
	{"fit typed by kwargs, no train", planRounds + "assigner: {settings: {task_groups: [{name: a, percentage: 1, tasks: [fit]}]}}\ntasks: {fit: {kwargs: {apply: local}}}\n", "no train task"},
}

func TestParsePlanErrors(t *testing.T) {
	for _, tt := range planErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := job.ParsePlan([]byte(tt.in))
			if err == nil {
				t.Fatalf("got nil error, want one containing %q", tt.want)
			}
			if !errors.Is(err, job.ErrInvalid) || !strings.HasPrefix(err.Error(), "plan/plan.yaml: ") {
				t.Errorf("error %q does not wrap ErrInvalid or lacks the plan/plan.yaml prefix", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestInspectWorkspace: an archive with plan/plan.yaml and no job.json is
// an OpenFL workspace; its manifest carries the task group.
func TestInspectWorkspace(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range map[string]string{"plan/": "", "plan/plan.yaml": planRounds, "tasks_obj.pkl": "x"} {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	zw.Close()
	info, err := job.Inspect(bytes.NewReader(buf.Bytes()), int64(buf.Len()), job.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if o := info.Manifest.OpenFL; o == nil || !reflect.DeepEqual(o.Tasks, defaultTasks) || info.Manifest.Rounds != 3 {
		t.Fatalf("got %+v", info.Manifest)
	}
}

func FuzzParsePlan(f *testing.F) {
	f.Add([]byte(planRounds))
	for _, tt := range planErrorCases {
		if len(tt.in) < 4096 {
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := job.ParsePlan(b)
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) || !strings.HasPrefix(err.Error(), "plan/plan.yaml: ") {
				t.Fatalf("error %q does not wrap ErrInvalid or lacks the plan/plan.yaml prefix", err)
			}
			return
		}
		checkStored(t, m)
	})
}
