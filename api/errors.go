package api

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/fedplane/fedplane/adminproto"
)

// The kinds of failure every part of fedplane reports. A function wraps one
// with context (fmt.Errorf("experiment %s: %w", id, api.ErrNotFound)); the
// edges map it through the table below, so a gRPC caller sees the kind's
// code and an admin caller its reply status, and no handler builds either
// by hand.
var (
	// ErrNotFound means the named envoy, job or model does not exist (or the
	// caller may not see it).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means the thing to be created exists already.
	ErrAlreadyExists = errors.New("already exists")
	// ErrAmbiguous means a job id prefix matches more than one job.
	ErrAmbiguous = errors.New("ambiguous id prefix")
	// ErrInvalidJob means a job folder, archive or job.json breaks a rule or
	// a limit: the submitter is at fault (package job's ErrInvalid).
	ErrInvalidJob = errors.New("invalid job")
	// ErrInvalid means the request itself is malformed.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotAllowed means the caller's identity may not do this.
	ErrNotAllowed = errors.New("permission denied")
	// ErrUnauthenticated means the caller has no identity to check.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrConflict means the request clashes with the current state: a status
	// change that the current status does not allow, results for another
	// round.
	ErrConflict = errors.New("conflict")
	// ErrRunning means the job runs, and the request needs it stopped.
	ErrRunning = errors.New("job is running")
	// ErrNotRunning means the job has ended (or never started), and the
	// request needs it pending or running.
	ErrNotRunning = errors.New("job is not running")
	// ErrTooLarge means a request is over a size cap.
	ErrTooLarge = errors.New("too large")
	// ErrDataLoss means a transfer broke off or arrived corrupt: a short
	// body, a checksum that does not match.
	ErrDataLoss = errors.New("data loss")
	// ErrUnavailable means the director cannot serve the request now (it is
	// stopping); the caller may try again.
	ErrUnavailable = errors.New("unavailable")
	// ErrBusy means too many requests of the kind are in progress, the
	// caller's or everybody's; the caller may try again later.
	ErrBusy = errors.New("too many in progress")
)

// kinds is the one table of error kinds: each with the gRPC code and the
// admin reply status (admin-wire.md) it becomes. The context errors are
// kinds too. The first row
// that errors.Is matches wins; anything else is internal.
var kinds = []struct {
	err   error
	code  codes.Code
	admin string
}{
	{ErrNotFound, codes.NotFound, adminproto.StatusInvalidJobID},
	{ErrAmbiguous, codes.InvalidArgument, adminproto.StatusInvalidJobID},
	{ErrAlreadyExists, codes.AlreadyExists, adminproto.StatusError},
	{ErrInvalidJob, codes.InvalidArgument, adminproto.StatusInvalidJobDef},
	{ErrInvalid, codes.InvalidArgument, adminproto.StatusSyntaxError},
	{ErrNotAllowed, codes.PermissionDenied, adminproto.StatusNotAuthorized},
	{ErrUnauthenticated, codes.Unauthenticated, adminproto.StatusNotAuthenticated},
	{ErrRunning, codes.FailedPrecondition, adminproto.StatusJobRunning},
	{ErrNotRunning, codes.FailedPrecondition, adminproto.StatusJobNotRunning},
	{ErrConflict, codes.FailedPrecondition, adminproto.StatusError},
	{ErrTooLarge, codes.ResourceExhausted, adminproto.StatusError},
	{ErrDataLoss, codes.DataLoss, adminproto.StatusError},
	{ErrUnavailable, codes.Unavailable, adminproto.StatusError},
	{ErrBusy, codes.ResourceExhausted, adminproto.StatusError},
	{context.Canceled, codes.Canceled, adminproto.StatusError},
	{context.DeadlineExceeded, codes.DeadlineExceeded, adminproto.StatusError},
}

// Codes returns the gRPC code and the admin reply status of err's kind.
// internal is true when err is of no kind: a failure of the director
// itself (a database or disk error), whose message must be logged, not
// shown to the caller.
func Codes(err error) (code codes.Code, admin string, internal bool) {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.code, k.admin, false
		}
	}
	return codes.Internal, adminproto.StatusInternalError, true
}

// InternalMessage is what a caller is told of an internal error; the
// details go to the director's log.
const InternalMessage = "internal error; see the director's log"
