package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/fedplane/fedplane/adminproto"
)

func TestCodes(t *testing.T) {
	tests := []struct {
		name         string
		err          error
		wantCode     codes.Code
		wantAdmin    string
		wantInternal bool
	}{
		{"not found", fmt.Errorf("experiment x: %w", ErrNotFound), codes.NotFound, adminproto.StatusInvalidJobID, false},
		{"ambiguous", fmt.Errorf("job id prefix: %w", ErrAmbiguous), codes.InvalidArgument, adminproto.StatusInvalidJobID, false},
		{"already exists", ErrAlreadyExists, codes.AlreadyExists, adminproto.StatusError, false},
		{"invalid job", fmt.Errorf("job.json: %w", ErrInvalidJob), codes.InvalidArgument, adminproto.StatusInvalidJobDef, false},
		{"invalid job beats invalid", errors.Join(ErrInvalid, ErrInvalidJob), codes.InvalidArgument, adminproto.StatusInvalidJobDef, false},
		{"invalid", fmt.Errorf("%w: usage", ErrInvalid), codes.InvalidArgument, adminproto.StatusSyntaxError, false},
		{"name rule", ValidateName("envoy", "a b"), codes.InvalidArgument, adminproto.StatusSyntaxError, false},
		{"not allowed", ErrNotAllowed, codes.PermissionDenied, adminproto.StatusNotAuthorized, false},
		{"unauthenticated", ErrUnauthenticated, codes.Unauthenticated, adminproto.StatusNotAuthenticated, false},
		{"running", ErrRunning, codes.FailedPrecondition, adminproto.StatusJobRunning, false},
		{"not running", ErrNotRunning, codes.FailedPrecondition, adminproto.StatusJobNotRunning, false},
		{"conflict", ErrConflict, codes.FailedPrecondition, adminproto.StatusError, false},
		{"too large", ErrTooLarge, codes.ResourceExhausted, adminproto.StatusError, false},
		{"data loss", ErrDataLoss, codes.DataLoss, adminproto.StatusError, false},
		{"unavailable", ErrUnavailable, codes.Unavailable, adminproto.StatusError, false},
		{"busy", fmt.Errorf("downloads: %w", ErrBusy), codes.ResourceExhausted, adminproto.StatusError, false},
		{"canceled", context.Canceled, codes.Canceled, adminproto.StatusError, false},
		{"deadline", fmt.Errorf("wait: %w", context.DeadlineExceeded), codes.DeadlineExceeded, adminproto.StatusError, false},
		{"database error", errors.New("database is locked"), codes.Internal, adminproto.StatusInternalError, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, admin, internal := Codes(tt.err)
			if code != tt.wantCode || admin != tt.wantAdmin || internal != tt.wantInternal {
				t.Errorf("got %v, %s, internal=%v; want %v, %s, internal=%v", code, admin, internal, tt.wantCode, tt.wantAdmin, tt.wantInternal)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string // "" for a valid name
	}{
		{"site-a", ""},
		{"lab_1.example@org", ""},
		{"", "is empty"},
		{".hidden", "starts with a dot"},
		{"site a", "has ' '"},
		{"a/b", "has '/'"},
		{"é", "has 'é'"},
		{strings.Repeat("x", MaxNameLen), ""},
		{strings.Repeat("x", MaxNameLen+1), "at most 128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName("envoy name", tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want it accepted", err)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "envoy name") {
				t.Fatalf("got %v, want ErrInvalid saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestJobStatusTerminal(t *testing.T) {
	want := map[JobStatus]bool{JobPending: false, JobInProgress: false, JobFinished: true, JobFailed: true, JobAborted: true, JobRejected: true}
	if len(JobStatuses) != len(want) {
		t.Fatalf("JobStatuses has %d statuses, want %d", len(JobStatuses), len(want))
	}
	for _, s := range JobStatuses {
		if s.Terminal() != want[s] {
			t.Errorf("%s.Terminal(): got %v, want %v", s, s.Terminal(), want[s])
		}
	}
}
