package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/store"
)

// The console's JSON API. Each handler parses, is authorized as the admin
// command it mirrors (so the console has exactly the admin port's roles),
// calls the domain and writes JSON with the api package's types.

// maxJobsShown bounds the jobs listed, newest first.
const maxJobsShown = 1000

// handler is an API handler for an identified, authorized caller.
type handler func(w http.ResponseWriter, r *http.Request, c director.Caller) error

// api wraps h: no caching, the caller identified and authorized for every
// one of commands, and h's error written as JSON with its status. Refusals
// go to the audit trail; what a caller may see does not (the admin port
// records the commands; a page refreshes too often for a trail of reads).
func (s *Server) api(command string, h handler, more ...string) http.HandlerFunc {
	commands := append([]string{command}, more...)
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		c, err := s.caller(r)
		for _, cmd := range commands {
			if err == nil && cmd != "" {
				err = director.Authorize(c, cmd)
			}
		}
		if err != nil {
			status := statusOf(err)
			s.audit(r, c, r.URL.Path, "", status, err.Error())
			writeError(w, status, err.Error())
			return
		}
		if err := h(w, r, c); err != nil {
			status := statusOf(err)
			msg := err.Error()
			if status == http.StatusInternalServerError {
				s.log.ErrorContext(r.Context(), "web console request failed", api.LogPath, r.URL.Path, api.LogErr, err)
				msg = api.InternalMessage
			}
			writeError(w, status, msg)
		}
	}
}

// writeJSON writes v as the reply.
func writeJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b) // a write error is a client gone
	return nil
}

// writeError writes {"error": msg} with status.
func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// Whoami is /api/whoami: the caller, the director's version, and the
// newest event's seq, from which the page follows /api/events after it
// has read the state.
type Whoami struct {
	Name    string `json:"name"`
	Org     string `json:"org,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Role    string `json:"role"`
	Version string `json:"version"`
	LastSeq int64  `json:"lastSeq"`
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, c director.Caller) error {
	version := s.d.Config().Version
	if version == "" {
		version = "dev"
	}
	return writeJSON(w, Whoami{Name: c.Name, Org: c.Org, Kind: c.Kind, Role: c.Role, Version: version, LastSeq: s.d.LastEventSeq()})
}

// Envoy is an envoy as the console lists it: list_envoys' api.Envoy and
// its GPU column.
type Envoy struct {
	api.Envoy
	GPU string `json:"gpu"`
}

// Envoys is /api/envoys: the first page of list_envoys and how many there
// are in all.
type Envoys struct {
	Envoys []Envoy `json:"envoys"`
	Total  int     `json:"total"`
}

func (s *Server) envoys(w http.ResponseWriter, r *http.Request, _ director.Caller) error {
	views, total, _ := s.d.EnvoysPage("", api.DefaultEnvoyPage)
	out := Envoys{Envoys: make([]Envoy, 0, len(views)), Total: total}
	for _, v := range views {
		var devs []api.CUDADevice
		gpu := "-"
		if v.Devices != "" && v.Devices != "[]" {
			if err := json.Unmarshal([]byte(v.Devices), &devs); err != nil {
				gpu = "?"
			} else {
				gpu = api.GPUSummary(devs)
			}
		}
		out.Envoys = append(out.Envoys, Envoy{Envoy: api.Envoy{
			Name: v.Name, Online: v.Online, LastSeen: v.LastSeen, ExperimentRunning: v.ExperimentRunning, Experiment: v.Experiment,
			Samples: v.NSamples, Shard: v.Description, SampleShape: v.SampleShape, TargetShape: v.TargetShape,
			RegisteredAt: v.RegisteredAt, CUDADevices: devs,
		}, GPU: gpu})
	}
	return writeJSON(w, out)
}

// Jobs is /api/jobs: list_jobs' jobs, newest first, at most maxJobsShown.
type Jobs struct {
	Jobs []api.Job `json:"jobs"`
	More bool      `json:"more"`
}

func (s *Server) jobs(w http.ResponseWriter, r *http.Request, _ director.Caller) error {
	jobs, err := s.d.ListJobs(r.Context(), store.ExperimentFilter{Max: maxJobsShown + 1})
	if err != nil {
		return err
	}
	out := Jobs{Jobs: jobs}
	if len(jobs) > maxJobsShown {
		out.Jobs, out.More = jobs[:maxJobsShown], true
	}
	if out.Jobs == nil {
		out.Jobs = []api.Job{}
	}
	return writeJSON(w, out)
}

// JobDetail is /api/jobs/{id}: get_job_meta's job with its envoys' states,
// and its aggregated metrics (origin "aggregator"), each with the round
// done that it belongs to.
type JobDetail struct {
	Job     api.Job       `json:"job"`
	Metrics []RoundMetric `json:"metrics"`
}

// RoundMetric is one aggregated metric of a round. Round counts rounds
// done, 1 after the first, as the job.round event's Round does: a metric
// is stored with the 0-based round it was computed in.
type RoundMetric struct {
	Round int       `json:"round"`
	Key   string    `json:"key"` // "task/name", as job.round's Metrics
	Value float64   `json:"value"`
	Time  time.Time `json:"time"`
}

// maxIDLen is the longest job id or prefix a path may carry (a UUID's).
const maxIDLen = 36

func (s *Server) job(w http.ResponseWriter, r *http.Request, _ director.Caller) error {
	id := r.PathValue("id")
	if len(id) > maxIDLen || strings.Trim(id, "0123456789abcdef-") != "" {
		return fmt.Errorf("%w: job id %q: want a job id or a prefix of one (hex digits and dashes)", api.ErrInvalid, id)
	}
	e, err := s.d.FindJob(r.Context(), id)
	if err != nil {
		return err
	}
	j, err := s.d.JobDetail(r.Context(), e)
	if err != nil {
		return err
	}
	ms, err := s.d.Metrics(r.Context(), e, 0)
	if err != nil {
		return err
	}
	out := JobDetail{Job: j, Metrics: []RoundMetric{}}
	for _, m := range ms {
		if m.Origin == api.OriginAggregator {
			out.Metrics = append(out.Metrics, RoundMetric{Round: m.Round + 1, Key: m.Task + "/" + m.Name, Value: m.Value, Time: m.Time})
		}
	}
	return writeJSON(w, out)
}
