package api

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
)

// The admin channel's commands (admin-wire.md), as the director names them
// and fladmin sends them.
const (
	CmdSubmitJob   = "submit_job"
	CmdListJobs    = "list_jobs"
	CmdGetJobMeta  = "get_job_meta"
	CmdAbortJob    = "abort_job"
	CmdDeleteJob   = "delete_job"
	CmdListEnvoys  = "list_envoys"
	CmdDownloadJob = "download_job"
	CmdGetMetrics  = "get_metrics"
	CmdCheckStatus = "check_status"
	CmdRemoveEnvoy = "remove_envoy"
)

// Page sizes of list_envoys (-m): a reply holds at most MaxEnvoyPage
// envoys (DefaultEnvoyPage without -m), and stops early once its envoys
// reach EnvoyPageBytes (their JSON and table cells), so that no page nears
// the admin exchange's 16 MiB limit however long the envoys' descriptions
// are (each at most 1 MiB, the gRPC request cap).
const (
	DefaultEnvoyPage = 1000
	MaxEnvoyPage     = 10000
	EnvoyPageBytes   = 2 << 20
)

// MinIDPrefix is the shortest job id prefix commands accept.
const MinIDPrefix = 8

// Keys of admin reply meta beside "status" and "info". One spelling each:
// FLARE's where FLARE defines the key (its clients read meta.job_id),
// lowerCamel otherwise.
const (
	MetaJobID     = "job_id"    // a job's id
	MetaJob       = "job"       // a Job
	MetaJobs      = "jobs"      // a list of Job
	MetaJobStatus = "jobStatus" // a JobStatus
	MetaEnvoys    = "envoys"    // a list of Envoy
	MetaMetrics   = "metrics"   // a list of Metric
	MetaSize      = "size"      // download_job: the body's size in bytes
	// MetaSignature, in a submit_job request, is the submitter's signature
	// of the archive (pki.JobSignature, as a JSON object).
	MetaSignature = "signature"
	MetaTotal     = "total" // list_envoys: how many envoys there are in all
	// MetaNextAfter, in list_envoys' reply, is the name to pass as -a for
	// the next page; "" on the last page.
	MetaNextAfter = "nextAfter"
	MetaEnvoy     = "envoy" // remove_envoy: the envoy forgotten
	// MetaUser, in a request, names the caller to a director without TLS.
	MetaUser = "user"
)

// Job is a job as admin replies carry it (meta "job" and "jobs") and as a
// download's status.json holds it.
type Job struct {
	JobID         string          `json:"job_id"`
	Name          string          `json:"name"`
	Status        JobStatus       `json:"status"`
	Reason        string          `json:"reason,omitempty"`
	Submitter     string          `json:"submitter"`
	SubmitterOrg  string          `json:"submitterOrg,omitempty"`
	SubmitterRole string          `json:"submitterRole,omitempty"`
	SubmitTime    time.Time       `json:"submitTime"`
	StartTime     time.Time       `json:"startTime,omitzero"`
	EndTime       time.Time       `json:"endTime,omitzero"`
	Duration      string          `json:"duration"`
	ArchiveSize   int64           `json:"archiveSize"`
	ArchiveSHA256 string          `json:"archiveSha256"`
	Manifest      json.RawMessage `json:"manifest,omitempty"`
	// RoundsDone is how many rounds have been aggregated, of Rounds.
	RoundsDone int `json:"roundsDone"`
	Rounds     int `json:"rounds"`
	// BestRound is the round whose model is best by job.json's
	// best_metric (status.json only).
	BestRound *int          `json:"bestRound,omitempty"`
	Envoys    []Participant `json:"envoys,omitempty"`
}

// Participant is one envoy's state in a job.
type Participant struct {
	Name    string     `json:"name"`
	Status  EnvoyState `json:"status"`
	Round   int        `json:"round"`
	Reason  string     `json:"reason,omitempty"`
	Updated time.Time  `json:"updated"`
}

// Envoy is an envoy as list_envoys carries it (meta "envoys").
type Envoy struct {
	Name              string    `json:"name"`
	Online            bool      `json:"online"`
	LastSeen          time.Time `json:"lastSeen"`
	Experiment        string    `json:"experiment"`
	ExperimentRunning bool      `json:"experimentRunning"`
	Samples           uint64    `json:"samples"`
	Shard             string    `json:"shard"`
	SampleShape       []string  `json:"sampleShape"`
	TargetShape       []string  `json:"targetShape"`
	RegisteredAt      time.Time `json:"registeredAt"`
	// CUDADevices is the GPU status the envoy last reported (at
	// registration or in a heartbeat).
	CUDADevices []CUDADevice `json:"cudaDevices"`
}

// CUDADevice is one GPU of an envoy, as OpenFL's envoy reports it
// (openfl.director.CudaDeviceInfo).
type CUDADevice struct {
	Index             uint64 `json:"index"`
	MemoryTotal       uint64 `json:"memoryTotal"`
	MemoryUtilized    uint64 `json:"memoryUtilized"`
	DeviceUtilization string `json:"deviceUtilization"`
	DriverVersion     string `json:"cudaDriverVersion"`
	CUDAVersion       string `json:"cudaVersion"`
	Name              string `json:"name"`
}

// OriginAggregator is the origin of the metrics the director computes (the
// sample-weighted means of a round); other metrics carry an envoy's name.
const OriginAggregator = "aggregator"

// Metric is one metric as get_metrics carries it (meta "metrics").
type Metric struct {
	Seq    int64     `json:"seq"`
	Round  int       `json:"round"`
	Origin string    `json:"origin"`
	Task   string    `json:"task"`
	Name   string    `json:"name"`
	Value  float64   `json:"value"`
	Time   time.Time `json:"time"`
}

// DirectorStatus is check_status's reply meta (beside "status").
type DirectorStatus struct {
	Version      string            `json:"version"`
	Uptime       string            `json:"uptime"`
	StartTime    time.Time         `json:"startTime"`
	Envoys       int               `json:"envoys"`
	EnvoysOnline int               `json:"envoysOnline"`
	Jobs         map[JobStatus]int `json:"jobs"`
}

// GPUSummary is list-envoys' GPU column: the devices' names in order
// ("T4, T4"), a device without a name by its index, "-" for none.
func GPUSummary(devs []CUDADevice) string {
	if len(devs) == 0 {
		return "-"
	}
	names := make([]string, len(devs))
	for i, d := range devs {
		names[i] = d.Name
		if d.Name == "" {
			names[i] = "cuda:" + strconv.FormatUint(d.Index, 10)
		}
	}
	return strings.Join(names, ", ")
}
