// Package job handles the job folder a user submits: job.json (parse,
// validate, defaults), streaming a folder into a zip whose size is known
// before the first byte is sent, and inspecting and unpacking an untrusted
// zip safely (entry paths, links, size and ratio caps).
//
// fladmin uses [NewArchive] and [Archive.WriteTo]; the director checks what
// it receives with [Inspect]; envoys extract it with [Unpack].
package job

import (
	"errors"
	"fmt"
	"strings"

	"github.com/fedplane/fedplane/api"
)

// ErrInvalid is wrapped by every error that reports a bad job: a job.json
// that does not parse or validate, a folder or archive that breaks a rule or
// a limit. Errors from the caller's side (a failing disk or connection) do not
// wrap it, so the director can answer "invalid_job_def" exactly when the
// submitter is at fault.
var ErrInvalid = api.ErrInvalidJob

// invalidError marks err as a bad-job error without changing its message.
type invalidError struct{ err error }

func (e *invalidError) Error() string   { return e.err.Error() }
func (e *invalidError) Unwrap() []error { return []error{ErrInvalid, e.err} }

// invalidf formats a bad-job error; %w verbs keep their meaning.
func invalidf(format string, args ...any) error {
	return &invalidError{fmt.Errorf(format, args...)}
}

// manifestError is a bad job.json. The file label is kept apart from the
// message so callers that know where the file came from (a folder on disk,
// an entry of an archive) can say so instead of plain "job.json".
type manifestError struct {
	file string
	msg  string
	err  error // the underlying cause, if any
}

func (e *manifestError) Error() string { return e.file + ": " + e.msg }

func (e *manifestError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrInvalid}
	}
	return []error{ErrInvalid, e.err}
}

// relabel returns err with its job.json label replaced by file, when err is
// a manifest error; other errors are returned unchanged.
func relabel(err error, file string) error {
	var me *manifestError
	if errors.As(err, &me) {
		return &manifestError{file: file, msg: me.msg, err: me.err}
	}
	return err
}

// formatSize renders n bytes for people: "300 B", "1.5 MiB", "20 GiB".
func formatSize(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v := float64(n) / unit
	i := 0
	for (v >= unit || v <= -unit) && i < len(units)-1 {
		v /= unit
		i++
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + units[i]
}
