package envoy

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fedplane/fedplane/api/scrape"
)

// What the envoy shows Prometheus (envoy start --metrics-listen). Every
// name has the fedplane_envoy_ prefix; counters end in _total, durations
// are in seconds and sizes in bytes. Labels take a few fixed values each
// (a task name, an outcome, a kind): never a path, a job id or anything of
// the shard, so that the port, which has no authentication, tells a
// scraper how the site works and nothing of what it holds.

// Outcomes of a training run, the outcome label of
// fedplane_envoy_training_runs_total.
const (
	OutcomeOK      = "ok"      // exited 0
	OutcomeFailed  = "failed"  // exited with another status
	OutcomeKilled  = "killed"  // died of a signal it was not sent by the envoy
	OutcomeTimeout = "timeout" // ran past train.timeout and was stopped
	OutcomeStopped = "stopped" // stopped by the envoy: the job was aborted, or the envoy stops
	OutcomeError   = "error"   // could not be started
)

// Kinds of failure reported to the director, the kind label of
// fedplane_envoy_failures_reported_total.
const (
	FailureTraining = "training" // the training command failed or timed out
	FailureOutput   = "output"   // its model or metrics were refused
	FailureRefused  = "refused"  // the site's policy or operator refused the job
	FailureEnvoy    = "envoy"    // anything else: the envoy's own trouble, a director's refusal
)

// Kinds of bytes moved, the kind label of the byte counters.
const (
	BytesArchives = "archives" // job archives received
	BytesModels   = "models"   // global models received
	BytesResults  = "results"  // task results sent
	BytesLogs     = "logs"     // training logs sent (share_logs)
)

// Prometheus holds an envoy's metrics in a registry of their own. The
// methods of a nil *Prometheus do nothing, so code that records need not
// ask whether metrics are on.
type Prometheus struct {
	reg        *prometheus.Registry
	runs       *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	failures   *prometheus.CounterVec
	received   *prometheus.CounterVec
	sent       *prometheus.CounterVec
	heartbeats *prometheus.CounterVec
	registered prometheus.Gauge
	running    prometheus.Gauge
	awaiting   prometheus.Gauge
}

// NewPrometheus returns an envoy's metrics, with the Go runtime's and the
// process's collectors and fedplane_envoy_build_info{version} registered
// beside them.
func NewPrometheus(version string) *Prometheus {
	m := &Prometheus{
		reg: prometheus.NewRegistry(),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_envoy_training_runs_total", Help: "Training command runs, by task and outcome (ok, failed, killed, timeout, stopped, error).",
		}, []string{"task", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fedplane_envoy_training_duration_seconds", Help: "Time a training command ran, by task, whatever its outcome.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 17), // 100 ms to about 3.6 h
		}, []string{"task"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_envoy_failures_reported_total", Help: "Job failures reported to the director, by kind (training, output, refused, envoy).",
		}, []string{"kind"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_envoy_received_bytes_total", Help: "Bytes received from the director, by kind (archives, models).",
		}, []string{"kind"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_envoy_sent_bytes_total", Help: "Bytes sent to the director, by kind (results, logs).",
		}, []string{"kind"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_envoy_heartbeats_total", Help: "Health checks sent to the director, by result (ok, failed).",
		}, []string{"result"}),
		registered: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedplane_envoy_registered", Help: "1 while the director has the envoy registered and answers its health checks, else 0.",
		}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedplane_envoy_experiment_running", Help: "1 while the envoy has taken an experiment, else 0.",
		}),
		awaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fedplane_envoy_awaiting_approval", Help: "1 while a job waits for the site operator's approval, else 0.",
		}),
	}
	m.reg.MustRegister(m.runs, m.duration, m.failures, m.received, m.sent, m.heartbeats,
		m.registered, m.running, m.awaiting,
		scrape.BuildInfo("fedplane_envoy_", "The envoy's build: 1, with its version as a label.", version),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The label values are known: show them at zero before anything happens.
	for _, o := range []string{OutcomeOK, OutcomeFailed, OutcomeKilled, OutcomeTimeout, OutcomeStopped, OutcomeError} {
		m.runs.WithLabelValues(taskTrain, o)
	}
	m.duration.WithLabelValues(taskTrain)
	for _, k := range []string{FailureTraining, FailureOutput, FailureRefused, FailureEnvoy} {
		m.failures.WithLabelValues(k)
	}
	for _, k := range []string{BytesArchives, BytesModels} {
		m.received.WithLabelValues(k)
	}
	for _, k := range []string{BytesResults, BytesLogs} {
		m.sent.WithLabelValues(k)
	}
	for _, r := range []string{"ok", "failed"} {
		m.heartbeats.WithLabelValues(r)
	}
	return m
}

// Registry is the registry the metrics are served from.
func (m *Prometheus) Registry() *prometheus.Registry { return m.reg }

// trainingRun counts a run of task's command that took d and ended as
// outcome.
func (m *Prometheus) trainingRun(task, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.runs.WithLabelValues(task, outcome).Inc()
	m.duration.WithLabelValues(task).Observe(d.Seconds())
}

// failureReported counts a failure of kind told to the director.
func (m *Prometheus) failureReported(kind string) {
	if m != nil {
		m.failures.WithLabelValues(kind).Inc()
	}
}

// receivedBytes and sentBytes count n bytes of kind.
func (m *Prometheus) receivedBytes(kind string, n int64) {
	if m != nil && n > 0 {
		m.received.WithLabelValues(kind).Add(float64(n))
	}
}

func (m *Prometheus) sentBytes(kind string, n int64) {
	if m != nil && n > 0 {
		m.sent.WithLabelValues(kind).Add(float64(n))
	}
}

// heartbeat counts a health check and sets the registered gauge: a
// director that answers has the envoy registered.
func (m *Prometheus) heartbeat(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.heartbeats.WithLabelValues("ok").Inc()
	} else {
		m.heartbeats.WithLabelValues("failed").Inc()
	}
}

// setRegistered, setRunning and setAwaiting set the state gauges.
func (m *Prometheus) setRegistered(v bool) {
	if m != nil {
		setBool(m.registered, v)
	}
}

func (m *Prometheus) setRunning(v bool) {
	if m != nil {
		setBool(m.running, v)
	}
}

func (m *Prometheus) setAwaiting(v bool) {
	if m != nil {
		setBool(m.awaiting, v)
	}
}

// setBool sets g to 1 for true, 0 for false.
func setBool(g prometheus.Gauge, v bool) {
	if v {
		g.Set(1)
	} else {
		g.Set(0)
	}
}

// outcome names how a training run ended, from command.run's error and
// whether the envoy stopped it (ctx ended).
func outcome(err error, stopped bool) string {
	var (
		ee *exitError
		te *timeoutError
	)
	switch {
	case stopped:
		return OutcomeStopped
	case err == nil:
		return OutcomeOK
	case errors.As(err, &te):
		return OutcomeTimeout
	case errors.As(err, &ee) && ee.status < 0:
		return OutcomeKilled
	case errors.As(err, &ee):
		return OutcomeFailed
	default:
		return OutcomeError
	}
}

// errNotRegistered is /readyz's answer while the director has not (or no
// longer) taken the envoy's registration.
var errNotRegistered = errors.New("not registered with the director")

// Ready reports whether the envoy is registered with a director that
// answers its health checks: what /readyz serves.
func (e *Envoy) Ready(context.Context) error {
	if !e.registered.Load() {
		return errNotRegistered
	}
	return nil
}
