package admin

import (
	"time"

	"github.com/fedplane/fedplane/api"
)

// flareRunStatus is the FLARE 2.6 run status (nvflare/apis/job_def.py
// RunStatus) a job status reads as: FLARE's tools wait for a status that
// starts with "FINISHED".
var flareRunStatus = map[api.JobStatus]string{
	api.JobPending:    "SUBMITTED",
	api.JobInProgress: "RUNNING",
	api.JobFinished:   "FINISHED:COMPLETED",
	api.JobFailed:     "FINISHED:EXECUTION_EXCEPTION",
	api.JobAborted:    "FINISHED:ABORTED",
	api.JobRejected:   "FINISHED:FAILED_TO_RUN",
}

// flareStartTime is how FLARE's job meta writes start_time.
const flareStartTime = "2006-01-02 15:04:05.000000"

// flareJobMeta is job j as FLARE's job meta (get_job_meta's meta
// "job_meta"), with FLARE's keys (JobMetaKey) for what fedplane knows, and
// fedplane's own status and reason beside.
func flareJobMeta(j api.Job) map[string]any {
	m := map[string]any{
		"job_id":          j.JobID,
		"name":            j.Name,
		"status":          flareRunStatus[j.Status],
		"submitter_name":  j.Submitter,
		"submitter_org":   j.SubmitterOrg,
		"submitter_role":  j.SubmitterRole,
		"submit_time":     float64(j.SubmitTime.UnixMicro()) / 1e6,
		"submit_time_iso": j.SubmitTime.Format(time.RFC3339Nano),
		"duration":        j.Duration,
		"fedplane_status": j.Status,
	}
	if !j.StartTime.IsZero() {
		m["start_time"] = j.StartTime.Format(flareStartTime)
	}
	if j.Reason != "" {
		m["fedplane_reason"] = j.Reason
	}
	if j.FolderName != "" {
		m["job_folder_name"] = j.FolderName
	}
	var parts []string
	for _, p := range j.Envoys {
		parts = append(parts, p.Name)
	}
	if parts != nil {
		m["job_clients"] = parts
	}
	return m
}
