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
	// CmdDownloadJobFile is the second step of FLARE's two-step download
	// (download_job lists the files and opens a transaction).
	CmdDownloadJobFile = "download_job_file"
	// CmdDownloadJobZip is fedplane's single-step download: one binary
	// reply whose body is a zip of the job's results (fladmin uses it).
	CmdDownloadJobZip = "download_job_zip"
	// CmdGetEvents returns the federation's events after a sequence
	// number, waiting for the next ones when asked to (fladmin events
	// --follow, wait-job).
	CmdGetEvents = "get_events"
	// CmdGetAudit returns the audit trail: project admins only.
	CmdGetAudit = "get_audit"
	// CmdConsoleLogin returns a one-time login link to the web console
	// (director serve --web-listen) for the caller's identity.
	CmdConsoleLogin = "console_login"
	// CmdUploadStatus says how many bytes of a resumable upload (submit_job
	// with MetaUploadID) the director holds, so a cut upload resumes there.
	CmdUploadStatus = "upload_status"
)

// The session commands FLARE 2.6's admin client sends besides the commands
// it is asked to run: it logs in with its certificate, builds its command
// registry from _commands, checks its session now and then and logs out.
const (
	CmdCertLogin    = "_cert_login"
	CmdCommands     = "_commands"
	CmdCheckSession = "_check_session"
	CmdLogout       = "_logout"
)

// Command scopes, as FLARE 2.6 groups its commands; a command may be sent
// as SCOPE.NAME or NAME. fedplane's own commands are in ScopeFedplane.
const (
	ScopeJobMgmt  = "job_mgmt"
	ScopeTraining = "training"
	ScopeFedplane = "fedplane"
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
	// MetaOffset and MetaSHA256 resume a transfer (README "Transfers that
	// resume"). In a download_job_zip request: the bytes of the zip the
	// caller holds and the sha256 the director announced for it; in the
	// reply: where the body starts in the zip, and the whole zip's sha256
	// (MetaSize is then the whole zip's size). In a submit_job request:
	// where the body starts in the upload MetaUploadID names, and the whole
	// archive's sha256 and size; in upload_status's reply and in the
	// refusal of an upload at the wrong offset: the bytes the director
	// holds.
	MetaOffset = "offset"
	MetaSHA256 = "sha256"
	// MetaUploadID, in a submit_job request, names a resumable upload: a
	// random id the client makes, which the director binds to the caller.
	MetaUploadID = "uploadId"
	// MetaSignature, in a submit_job request, is the submitter's signature
	// of the archive (pki.JobSignature, as a JSON object).
	MetaSignature = "signature"
	// MetaWaitForEnvoys, in a submit_job request, false asks the director
	// to refuse a job that cannot start with the envoys registered now;
	// left out or true, such a job is taken and waits, and the reply's
	// MetaWarning says why it cannot start yet.
	MetaWaitForEnvoys = "waitForEnvoys"
	// MetaWarning, in a reply, is something the caller should know
	// although the command succeeded.
	MetaWarning = "warning"
	MetaTotal   = "total" // list_envoys: how many envoys there are in all
	// MetaNextAfter, in list_envoys' reply, is the name to pass as -a for
	// the next page; "" on the last page.
	MetaNextAfter = "nextAfter"
	MetaEnvoy     = "envoy" // remove_envoy: the envoy forgotten
	// MetaUser, in a request, names the caller to a director without TLS.
	MetaUser = "user"

	// FLARE 2.6's keys (nvflare/fuel/hci/proto.py MetaKey).
	MetaJobMeta    = "job_meta"    // get_job_meta: the job as FLARE's job meta
	MetaFiles      = "files"       // download_job: the files to fetch, relative paths
	MetaTxID       = "tx_id"       // download_job: the download transaction
	MetaFolderName = "folder_name" // download_job: the folder the files land in
	MetaCmdName    = "cmd_name"    // download_job: the command that fetches each file
	// MetaJobFolderName, in submit_job's reply, is the job folder's name as
	// the request gave it.
	MetaJobFolderName = "job_folder_name"
	// MetaURL and MetaExpires, in console_login's reply, are the one-time
	// login link and when it stops working.
	MetaURL     = "url"
	MetaExpires = "expires"
)

// FlareJob is one job of list_jobs' meta "jobs": a Job plus the keys FLARE
// 2.6's clients read, which Job does not already carry (job_id, status and
// duration it does).
type FlareJob struct {
	Job
	JobName       string `json:"job_name"`
	SubmitTimeISO string `json:"submit_time"` // as FLARE's submit_time_iso
}

// Job is a job as admin replies carry it (meta "job" and "jobs") and as a
// download's status.json holds it.
type Job struct {
	JobID         string    `json:"job_id"`
	Name          string    `json:"name"`
	Status        JobStatus `json:"status"`
	Reason        string    `json:"reason,omitempty"`
	Submitter     string    `json:"submitter"`
	SubmitterOrg  string    `json:"submitterOrg,omitempty"`
	SubmitterRole string    `json:"submitterRole,omitempty"`
	SubmitTime    time.Time `json:"submitTime"`
	StartTime     time.Time `json:"startTime,omitzero"`
	EndTime       time.Time `json:"endTime,omitzero"`
	Duration      string    `json:"duration"`
	ArchiveSize   int64     `json:"archiveSize"`
	ArchiveSHA256 string    `json:"archiveSha256"`
	// FolderName is the job folder a FLARE admin client named at submit.
	FolderName string          `json:"job_folder_name,omitempty"`
	Manifest   json.RawMessage `json:"manifest,omitempty"`
	// RoundsDone is how many rounds have been aggregated, of Rounds.
	RoundsDone int `json:"roundsDone"`
	Rounds     int `json:"rounds"`
	// BestRound is the round whose model is best by job.json's
	// best_metric (status.json only).
	BestRound *int          `json:"bestRound,omitempty"`
	Envoys    []Participant `json:"envoys,omitempty"`
	// Participation is the job's participation rule with its defaults
	// filled in (show-job only).
	Participation *Participation `json:"participation,omitempty"`
	// Storage is what the job holds on the director's disk (show-job
	// only).
	Storage *Storage `json:"storage,omitempty"`
}

// Storage is what a job holds on the director's disk, by part, and the
// keep_models rule that bounds its round models.
type Storage struct {
	// Bytes is the sum of the parts.
	Bytes        int64 `json:"bytes"`
	ArchiveBytes int64 `json:"archiveBytes"`
	// Models round models are on disk, of ModelBytes in all.
	Models     int   `json:"models"`
	ModelBytes int64 `json:"modelBytes"`
	// StateBytes is the aggregator's server state (job.json's aggregator
	// fedavgm, fedadam, ...).
	StateBytes int64 `json:"stateBytes"`
	// ResultsBytes are the stored reports of the round in progress.
	ResultsBytes int64 `json:"resultsBytes"`
	LogBytes     int64 `json:"logBytes"`
	// OtherBytes is whatever else the job's folder holds.
	OtherBytes int64 `json:"otherBytes"`
	// KeepModels is job.json's keep_models ("last", "best", "all" or a
	// count), the default ("best") when KeepIsDefault.
	KeepModels    string `json:"keepModels"`
	KeepIsDefault bool   `json:"keepIsDefault"`
}

// Participation is how a job's rounds take their envoys: how many train
// each round, the reports a round needs to close, and its deadline.
type Participation struct {
	// PerRound envoys train each round, of Participants.
	PerRound     int `json:"perRound"`
	Participants int `json:"participants"`
	Quorum       int `json:"quorum"`
	// RoundDeadline is round_timeout, or its default (train.timeout plus
	// 10m) when DeadlineIsDefault.
	RoundDeadline     string `json:"roundDeadline"`
	DeadlineIsDefault bool   `json:"deadlineIsDefault"`
	// SamplingSeed seeds the per-round sample, when rounds sample.
	SamplingSeed *uint64 `json:"samplingSeed,omitempty"`
	// Sampled are the envoys the current round trains on, when it samples.
	Sampled []string `json:"sampled,omitempty"`
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
