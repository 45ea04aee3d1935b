package main

import (
	"encoding/json"
	"time"
)

// jobInfo is a job as the director's admin replies carry it (meta "job" and
// "jobs"); fladmin's JSON output passes those objects through unchanged.
type jobInfo struct {
	JobID         string          `json:"jobId"`
	Name          string          `json:"name"`
	Status        string          `json:"status"`
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
	RoundsDone    int             `json:"roundsDone"`
	Rounds        int             `json:"rounds"`
	Envoys        []participant   `json:"envoys,omitempty"`
}

// participant is one envoy's state in a job.
type participant struct {
	Name    string    `json:"name"`
	Status  string    `json:"status"`
	Round   int       `json:"round"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
}
