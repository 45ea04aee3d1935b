package api

// JobStatus is where a job is in its lifecycle: pending, then in_progress,
// then one of the terminal statuses. The strings are OpenFL's experiment
// statuses and what admin replies and the store carry.
type JobStatus string

// The job statuses.
const (
	JobPending    JobStatus = "pending"
	JobInProgress JobStatus = "in_progress"
	JobFinished   JobStatus = "finished"
	JobFailed     JobStatus = "failed"
	JobAborted    JobStatus = "aborted"
	JobRejected   JobStatus = "rejected"
)

// JobStatuses lists every job status, in lifecycle order.
var JobStatuses = []JobStatus{JobPending, JobInProgress, JobFinished, JobFailed, JobAborted, JobRejected}

// Terminal reports whether s is final: nothing changes a job after it.
func (s JobStatus) Terminal() bool {
	switch s {
	case JobFinished, JobFailed, JobAborted, JobRejected:
		return true
	}
	return false
}

// EnvoyState is one envoy's state in one job.
type EnvoyState string

// The states of an envoy in a job.
const (
	EnvoyAssigned EnvoyState = "assigned" // chosen, has not asked for a task yet
	EnvoyTraining EnvoyState = "training" // given the train task of its round
	EnvoyReported EnvoyState = "reported" // sent its results for its round
	EnvoyFinished EnvoyState = "finished"
	EnvoyFailed   EnvoyState = "failed"
	EnvoyAborted  EnvoyState = "aborted"
	// EnvoyAwaitingApproval: the site holds the job until its operator
	// approves it (site policy "approval: manual").
	EnvoyAwaitingApproval EnvoyState = "awaiting_approval"
	// EnvoyRefused: the site refused the job (its policy, its operator, or
	// a signature that does not verify); the reason says why.
	EnvoyRefused EnvoyState = "refused"
	// EnvoyMissed: the envoy missed the current round (it went offline,
	// its training failed or timed out, its results were refused); the
	// reason says how. It rejoins when it asks for a task again.
	EnvoyMissed EnvoyState = "missed"
)

// CodeSiteRefused is the error_code of SetExperimentFailed with which an
// envoy says that its site refused the experiment, rather than failed it:
// outside the 0-255 of exit statuses, which training failures report.
const CodeSiteRefused = 1000
