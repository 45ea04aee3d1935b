// Package metrics is what the director shows Prometheus: counters and
// histograms the domain and its adapters move as things happen, gauges
// computed at scrape time from the domain (so a heartbeat updates nothing
// here), and the HTTP handler that serves them with /healthz and /readyz.
//
// Every name has the fedplane_ prefix; counters end in _total, durations
// are in seconds and sizes in bytes (Prometheus's naming conventions). The
// methods of a nil *Director do nothing, so code that records need not ask
// whether metrics are on.
package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fedplane/fedplane/api"
)

// Kinds of bytes moved, the kind label of the byte counters.
const (
	KindArchives = "archives" // job archives: uploaded by admins, downloaded by envoys
	KindModels   = "models"   // global tensors sent to envoys, trained models to admins
	KindResults  = "results"  // envoys' task results
	KindLogs     = "logs"     // training logs envoys share
)

// Gauges is what a scrape asks the domain for.
type Gauges struct {
	EnvoysOnline, EnvoysOffline int
	Jobs                        map[api.JobStatus]int
	// HeartbeatLag is the age of the oldest last heartbeat among online
	// envoys: how close the slowest live envoy is to counting as offline.
	HeartbeatLag time.Duration
}

// Source computes the gauges at scrape time.
type Source interface {
	Gauges(ctx context.Context) (Gauges, error)
}

// scrapeTimeout bounds the store read of one scrape.
const scrapeTimeout = 5 * time.Second

// Director holds the director's metrics in a registry of their own.
type Director struct {
	reg           *prometheus.Registry
	rounds        prometheus.Counter
	roundDuration prometheus.Histogram
	aggDuration   prometheus.Histogram
	received      *prometheus.CounterVec
	sent          *prometheus.CounterVec
	admin         *prometheus.CounterVec
	grpc          *prometheus.CounterVec
	// calls caches each series' counter of grpc (callKey -> Counter),
	// sparing the label hashing of WithLabelValues on every call.
	calls sync.Map
}

// NewDirector returns the director's metrics, with the Go runtime's and
// the process's collectors registered beside them.
func NewDirector() *Director {
	m := &Director{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fedplane_rounds_completed_total", Help: "Rounds aggregated, all experiments together.",
		}),
		roundDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedplane_round_duration_seconds", Help: "Time from a round's start to its aggregated model.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s to about 2.3 h
		}),
		aggDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "fedplane_aggregation_duration_seconds", Help: "Time to aggregate a round's results into its model.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10), // 1 ms to about 4 min
		}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_received_bytes_total", Help: "Bytes received, by kind (archives, models, results).",
		}, []string{"kind"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_sent_bytes_total", Help: "Bytes sent, by kind (archives, models, results).",
		}, []string{"kind"}),
		admin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_admin_commands_total", Help: "Admin commands served, by command and reply status.",
		}, []string{"command", "status"}),
		grpc: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fedplane_grpc_calls_total", Help: "gRPC calls served, by full method and status code.",
		}, []string{"method", "code"}),
	}
	m.reg.MustRegister(m.rounds, m.roundDuration, m.aggDuration, m.received, m.sent, m.admin, m.grpc,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The kinds are known: show them at zero before the first byte moves.
	for _, k := range []string{KindArchives, KindModels, KindResults, KindLogs} {
		m.received.WithLabelValues(k)
		m.sent.WithLabelValues(k)
	}
	return m
}

// Watch registers the gauges src computes at each scrape. Call it once.
func (m *Director) Watch(src Source) {
	if m != nil {
		m.reg.MustRegister(&gaugeCollector{src: src})
	}
}

// Registry is the registry the metrics are served from.
func (m *Director) Registry() *prometheus.Registry { return m.reg }

// RoundDone counts a round aggregated after took since its start, whose
// aggregation took agg.
func (m *Director) RoundDone(took, agg time.Duration) {
	if m == nil {
		return
	}
	m.rounds.Inc()
	m.roundDuration.Observe(took.Seconds())
	m.aggDuration.Observe(agg.Seconds())
}

// Received counts n bytes of kind received.
func (m *Director) Received(kind string, n int64) {
	if m != nil && n > 0 {
		m.received.WithLabelValues(kind).Add(float64(n))
	}
}

// Sent counts n bytes of kind sent.
func (m *Director) Sent(kind string, n int64) {
	if m != nil && n > 0 {
		m.sent.WithLabelValues(kind).Add(float64(n))
	}
}

// AdminCommand counts an admin command answered with status. Callers pass
// only command names the director knows, so a client cannot grow the
// label set.
func (m *Director) AdminCommand(command, status string) {
	if m != nil {
		m.admin.WithLabelValues(command, status).Inc()
	}
}

var (
	envoysDesc = prometheus.NewDesc("fedplane_envoys", "Registered envoys, by state (online, offline).", []string{"state"}, nil)
	jobsDesc   = prometheus.NewDesc("fedplane_jobs", "Jobs in the store, by status.", []string{"status"}, nil)
	lagDesc    = prometheus.NewDesc("fedplane_heartbeat_lag_seconds",
		"Age of the oldest last heartbeat among online envoys (0 with none online).", nil, nil)
)

// gaugeCollector asks its source for the gauges at each scrape, so nothing
// on the heartbeat path keeps them up to date.
type gaugeCollector struct{ src Source }

func (c *gaugeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- envoysDesc
	ch <- jobsDesc
	ch <- lagDesc
}

func (c *gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	g, err := c.src.Gauges(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(jobsDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(envoysDesc, prometheus.GaugeValue, float64(g.EnvoysOnline), "online")
	ch <- prometheus.MustNewConstMetric(envoysDesc, prometheus.GaugeValue, float64(g.EnvoysOffline), "offline")
	for _, s := range api.JobStatuses {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(g.Jobs[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, g.HeartbeatLag.Seconds())
}
