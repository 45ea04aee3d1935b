package api

import "time"

// EventKind names what happened in an Event.
type EventKind string

// The kinds of events the director records, as `fladmin events` shows
// them.
const (
	EventEnvoyRegistered EventKind = "envoy.registered"
	EventEnvoyOnline     EventKind = "envoy.online"
	EventEnvoyOffline    EventKind = "envoy.offline"
	EventEnvoyRemoved    EventKind = "envoy.removed"
	EventJobSubmitted    EventKind = "job.submitted"
	EventJobStarted      EventKind = "job.started"
	// EventJobRound is a round aggregated: Round is the number of rounds
	// done, Metrics the round's aggregated metrics.
	EventJobRound    EventKind = "job.round"
	EventJobFinished EventKind = "job.finished"
	EventJobFailed   EventKind = "job.failed"
	EventJobAborted  EventKind = "job.aborted"
	EventJobDeleted  EventKind = "job.deleted"
)

// EventKinds lists every kind, in the order of a job's life.
var EventKinds = []EventKind{
	EventEnvoyRegistered, EventEnvoyOnline, EventEnvoyOffline, EventEnvoyRemoved,
	EventJobSubmitted, EventJobStarted, EventJobRound, EventJobFinished, EventJobFailed, EventJobAborted, EventJobDeleted,
}

// Event is one thing that happened in the federation. Seq increases with
// every event the director records, so a client that follows the stream
// asks for the events after the last Seq it saw.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    EventKind `json:"kind"`
	Job     string    `json:"job,omitempty"`
	JobName string    `json:"job_name,omitempty"`
	Envoy   string    `json:"envoy,omitempty"`
	// Round is, for job.round, the rounds done (1 after the first).
	Round int `json:"round,omitempty"`
	// Message says more in words: who submitted or aborted, why a job
	// failed, a shard's size.
	Message string `json:"message,omitempty"`
	// Metrics are a job.round's aggregated metrics, "task/name" to value.
	Metrics map[string]float64 `json:"metrics,omitempty"`
}

// Limits of get_events: a reply holds at most MaxEventPage events, and a
// follower's wait (-w) lasts at most MaxEventWait, under the 30 s idle
// timeout of admin connections at both ends.
const (
	DefaultEventPage = 1000
	MaxEventPage     = 10000
	MaxEventWait     = 25 * time.Second
	// DefaultEventHistory is how many events the director keeps (director
	// serve --event-history); older ones are pruned.
	DefaultEventHistory = 100000
)

// Audit channels: where a call came in.
const (
	AuditAdmin = "admin" // the admin port (fladmin, FLARE's client)
	AuditGRPC  = "grpc"  // the OpenFL gRPC port (frontends, admins' calls)
	AuditWeb   = "web"   // the web console (logins and refused requests)
)

// AuditRecord is one call in the audit trail: who (the certificate's name,
// organisation, kind and role), on which channel, what it asked for and
// what it named, and how it ended.
type AuditRecord struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Caller string    `json:"caller"`
	Org    string    `json:"org,omitempty"`
	Kind   string    `json:"kind,omitempty"`
	Role   string    `json:"role,omitempty"`
	Remote string    `json:"remote,omitempty"`
	// Channel is AuditAdmin, AuditGRPC or AuditWeb; Action the admin command or the
	// gRPC method's full name; Target what the call named (its arguments,
	// the experiment), cut to MaxAuditField bytes.
	Channel string `json:"channel"`
	Action  string `json:"action"`
	Target  string `json:"target,omitempty"`
	// Outcome is "ok", an admin reply status or a gRPC code's name;
	// Detail the refusal's message, cut to MaxAuditField bytes.
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// Reply meta keys of get_events and get_audit.
const (
	MetaEvents  = "events"   // a list of Event
	MetaLastSeq = "last_seq" // the newest event's seq when the reply was made
	MetaAudit   = "audit"    // a list of AuditRecord
)

// MaxAuditField bounds an audit record's free-text fields, so that a
// caller's long arguments cannot bloat the trail.
const MaxAuditField = 512

// Truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
