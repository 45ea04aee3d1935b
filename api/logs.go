package api

import "time"

// Training logs an envoy shares (site policy share_logs, or envoy start
// --share-logs) and `fladmin logs` shows.

// CmdGetLog is the admin command that returns an envoy's training log of
// a job: get_log <job_id> <envoy_name>.
const CmdGetLog = "get_log"

// MetaLog, in get_log's reply, is a TrainingLog.
const MetaLog = "log"

// MaxSharedLog caps a shared training log: an envoy sends its last
// MaxSharedLog bytes (from the first line that starts within them), and
// the director refuses a longer one before reading it.
const MaxSharedLog = 4 << 20

// LogChunk is the largest piece of a training log in one gRPC message.
const LogChunk = 1 << 20

// gRPC metadata keys of the heartbeat (UpdateEnvoyStatus) for shared logs.
const (
	// MDShareLogs, a request header, is "true" when the envoy's site
	// shares training logs.
	MDShareLogs = "fedplane-share-logs"
	// MDSendLog, a response header, names experiments (comma-separated)
	// whose training log an admin asked for: the envoy sends it now.
	MDSendLog = "fedplane-send-log"
)

// TrainingLog is one envoy's training log of one job, as the director
// last received it.
type TrainingLog struct {
	JobID string `json:"job_id"`
	Envoy string `json:"envoy"`
	// TakenAt is when the director received this copy.
	TakenAt time.Time `json:"takenAt"`
	// Fresh says whether the envoy sent this copy when asked by this
	// request; false means it is the latest copy the director had.
	Fresh bool `json:"fresh"`
	// Truncated says the envoy sent only the log's tail.
	Truncated bool `json:"truncated"`
	Size      int  `json:"size"`
	// Data is the log (base64 in JSON): the training command's stdout and
	// stderr, the site's paths redacted.
	Data []byte `json:"data"`
}
