package job

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fedplane/fedplane/api"
)

// This file reads the plan of an OpenFL workspace, the archive OpenFL's
// interactive frontend submits (experiment.py _pack_the_workspace zips the
// workspace folder, so plan/plan.yaml lies at the archive's top), into a
// Manifest. Only what the director's rounds need is read: the rounds, the
// task group and its tasks, delta_updates. The rest of the plan is for the
// collaborators and is left alone.

// PlanFile is where an OpenFL workspace keeps its plan.
const PlanFile = "plan/plan.yaml"

// MaxPlanSize is the largest plan.yaml accepted, in bytes.
const MaxPlanSize = 1 << 20

// Task types, as OpenFL's Task.task_type spells them.
const (
	TaskTypeTrain    = "train"
	TaskTypeValidate = "validate"
)

// openflAssigner is the assigner template whose task_groups fedplane
// follows (OpenFL's plan/defaults/assigner.yaml).
const openflAssigner = "openfl.component.RandomGroupedAssigner"

// openflAssignerDefaults is the defaults file OpenFL's plans name for the
// assigner; a plan not yet resolved still names it.
const openflAssignerDefaults = "plan/defaults/assigner.yaml"

// DefaultTaskGroup is OpenFL's default task group (assigner.yaml), run in
// this order by every collaborator each round.
var DefaultTaskGroup = []string{"aggregated_model_validation", "train", "locally_tuned_model_validation"}

// OpenFL is the part of a manifest that comes from an OpenFL workspace's
// plan: the tasks every collaborator runs each round, in order.
type OpenFL struct {
	Tasks []Task `json:"tasks"`
	// DeltaUpdates is collaborator.settings.delta_updates: collaborators
	// send and fetch differences from the round's model.
	DeltaUpdates bool `json:"delta_updates,omitempty"`
}

// Task is one task of an OpenFL task group, as GetTasks hands it out.
type Task struct {
	Name string `json:"name"`
	// Function is tasks.<name>.function in the plan, or Name when the plan
	// does not say.
	Function string `json:"function"`
	// Type is TaskTypeTrain or TaskTypeValidate.
	Type string `json:"type"`
	// ApplyLocal: a validation of the collaborator's locally trained model
	// rather than the round's global one.
	ApplyLocal bool `json:"apply_local,omitempty"`
}

// TrainTask returns the one train task of the group.
func (o *OpenFL) TrainTask() Task {
	for _, t := range o.Tasks {
		if t.Type == TaskTypeTrain {
			return t
		}
	}
	return Task{}
}

// Lookup returns the task named name.
func (o *OpenFL) Lookup(name string) (Task, bool) {
	for _, t := range o.Tasks {
		if t.Name == name {
			return t, true
		}
	}
	return Task{}, false
}

// planDoc is the part of plan.yaml fedplane reads.
type planDoc struct {
	Aggregator struct {
		Settings struct {
			RoundsToTrain *int `yaml:"rounds_to_train"`
		} `yaml:"settings"`
	} `yaml:"aggregator"`
	Collaborator struct {
		Settings struct {
			DeltaUpdates bool `yaml:"delta_updates"`
		} `yaml:"settings"`
	} `yaml:"collaborator"`
	Assigner *struct {
		Template string               `yaml:"template"`
		Defaults *string              `yaml:"defaults"`
		Settings map[string]yaml.Node `yaml:"settings"`
	} `yaml:"assigner"`
	Tasks map[string]yaml.Node `yaml:"tasks"`
}

type taskGroup struct {
	Name       string   `yaml:"name"`
	Percentage float64  `yaml:"percentage"`
	Tasks      []string `yaml:"tasks"`
}

type taskSettings struct {
	Function string `yaml:"function"`
	Kwargs   struct {
		Apply string `yaml:"apply"`
	} `yaml:"kwargs"`
}

func planErrf(format string, args ...any) error {
	return &manifestError{file: PlanFile, msg: fmt.Sprintf(format, args...)}
}

// ParsePlan reads an OpenFL workspace's plan.yaml into a Manifest whose
// OpenFL section holds the task group: assigner.settings.task_groups, or
// OpenFL's default group when the plan has none. Only one group, given to
// every collaborator (percentage 1.0), is supported; any other assigner
// setting is refused by name. Each task's type follows OpenFL's rule: a
// tasks.<name>.kwargs.apply (local or global) makes it a validation, else
// its name does (collaborator.py sends the validation data size for a
// name containing "valid", the training one for "train"). There must be
// exactly one train task. The Manifest has no name or envoys: the
// frontend's submission gives them. Errors start with "plan/plan.yaml: "
// and wrap ErrInvalid.
func ParsePlan(b []byte) (*Manifest, error) {
	if len(b) > MaxPlanSize {
		return nil, planErrf("%d bytes exceeds the limit of %s", len(b), formatSize(MaxPlanSize))
	}
	var doc planDoc
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, planErrf("the file is empty")
		}
		return nil, planErrf("not valid YAML: %v", err)
	}
	rounds := doc.Aggregator.Settings.RoundsToTrain
	switch {
	case rounds == nil:
		return nil, planErrf("aggregator.settings.rounds_to_train is not set")
	case *rounds < 1 || *rounds > maxRounds:
		return nil, planErrf("aggregator.settings.rounds_to_train must be 1 to %d, got %d", maxRounds, *rounds)
	}
	group, err := planGroup(&doc)
	if err != nil {
		return nil, err
	}
	o := &OpenFL{DeltaUpdates: doc.Collaborator.Settings.DeltaUpdates}
	for i, name := range group {
		if err := api.ValidateName(fmt.Sprintf("task %d of the group", i), name); err != nil {
			return nil, planErrf("assigner.settings.task_groups: %v", err)
		}
		if _, dup := o.Lookup(name); dup {
			return nil, planErrf("assigner.settings.task_groups: task %q appears twice", name)
		}
		t, err := planTask(&doc, name)
		if err != nil {
			return nil, err
		}
		o.Tasks = append(o.Tasks, t)
	}
	if err := o.validate(); err != nil {
		return nil, planErrf("%v", err)
	}
	return &Manifest{
		Rounds: *rounds,
		Train:  Train{Command: []string{}, Timeout: Duration(DefaultTrainTimeout)},
		OpenFL: o,
	}, nil
}

// planGroup returns the task names of the plan's one task group.
func planGroup(doc *planDoc) ([]string, error) {
	a := doc.Assigner
	if a == nil {
		return DefaultTaskGroup, nil
	}
	if a.Template != "" && a.Template != openflAssigner {
		return nil, planErrf("assigner.template %q is not supported; fedplane follows %s's task_groups", a.Template, openflAssigner)
	}
	if a.Defaults != nil && *a.Defaults != openflAssignerDefaults {
		return nil, planErrf("assigner.defaults %q is not supported; resolve the plan or use %s", *a.Defaults, openflAssignerDefaults)
	}
	var other []string
	for k := range a.Settings {
		if k != "task_groups" {
			other = append(other, k)
		}
	}
	if len(other) > 0 {
		slices.Sort(other)
		return nil, planErrf("assigner.settings %s not supported; fedplane supports task_groups only", quoteList(other))
	}
	node, ok := a.Settings["task_groups"]
	if !ok {
		return DefaultTaskGroup, nil
	}
	var groups []taskGroup
	if err := node.Decode(&groups); err != nil {
		return nil, planErrf("assigner.settings.task_groups: %v", err)
	}
	switch {
	case len(groups) == 0:
		return nil, planErrf("assigner.settings.task_groups is empty")
	case len(groups) > 1:
		return nil, planErrf("assigner.settings.task_groups has %d groups; fedplane supports one, given to every collaborator", len(groups))
	}
	g := groups[0]
	if math.Abs(g.Percentage-1) >= 0.01 {
		return nil, planErrf("assigner.settings.task_groups: group %q has percentage %v; fedplane supports one group at 1.0 (every collaborator)", g.Name, g.Percentage)
	}
	if len(g.Tasks) == 0 {
		return nil, planErrf("assigner.settings.task_groups: group %q has no tasks", g.Name)
	}
	return g.Tasks, nil
}

// planTask builds task name from the plan's tasks section, if it has one.
func planTask(doc *planDoc, name string) (Task, error) {
	t := Task{Name: name, Function: name}
	var s taskSettings
	if node, ok := doc.Tasks[name]; ok {
		if err := node.Decode(&s); err != nil {
			return t, planErrf("tasks.%s: %v", name, err)
		}
	}
	if s.Function != "" {
		if err := api.ValidateName("function", s.Function); err != nil {
			return t, planErrf("tasks.%s.function: %v", name, err)
		}
		t.Function = s.Function
	}
	switch s.Kwargs.Apply {
	case "local":
		t.Type, t.ApplyLocal = TaskTypeValidate, true
	case "global":
		t.Type = TaskTypeValidate
	case "":
		// OpenFL's collaborator checks "valid" after "train" and the
		// later wins, so a name holding both is a validation.
		switch {
		case strings.Contains(name, "valid"):
			t.Type, t.ApplyLocal = TaskTypeValidate, strings.Contains(name, "local")
		case strings.Contains(name, "train"):
			t.Type = TaskTypeTrain
		default:
			return t, planErrf("task %q: neither its name (\"train\", \"valid\") nor tasks.%s.kwargs.apply says whether it trains or validates", name, name)
		}
	default:
		return t, planErrf("tasks.%s.kwargs.apply must be local or global, got %q", name, s.Kwargs.Apply)
	}
	return t, nil
}

// validate checks a task group: named tasks of known types, no name
// twice, exactly one train task.
func (o *OpenFL) validate() error {
	if len(o.Tasks) == 0 {
		return fmt.Errorf("the task group has no tasks")
	}
	var train []string
	seen := map[string]bool{}
	for _, t := range o.Tasks {
		if err := api.ValidateName("task", t.Name); err != nil {
			return fmt.Errorf("%v", err)
		}
		if err := api.ValidateName("function", t.Function); err != nil {
			return fmt.Errorf("task %q: %v", t.Name, err)
		}
		if seen[t.Name] {
			return fmt.Errorf("task %q appears twice", t.Name)
		}
		seen[t.Name] = true
		switch t.Type {
		case TaskTypeTrain:
			train = append(train, t.Name)
		case TaskTypeValidate:
		default:
			return fmt.Errorf("task %q has type %q; it must be %s or %s", t.Name, t.Type, TaskTypeTrain, TaskTypeValidate)
		}
		if t.ApplyLocal && t.Type != TaskTypeValidate {
			return fmt.Errorf("task %q: apply_local is for validation tasks", t.Name)
		}
	}
	switch len(train) {
	case 0:
		return fmt.Errorf("the task group has no train task; fedplane needs exactly one")
	case 1:
		return nil
	}
	return fmt.Errorf("the task group has %d train tasks (%s); fedplane needs exactly one", len(train), quoteList(train))
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return strings.Join(q, ", ")
}
