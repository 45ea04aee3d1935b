package director

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/store"
)

// Domain errors of the director. Handlers wrap them with context; toStatus
// maps them to gRPC codes and admin reply statuses.
var (
	// ErrNotFound means the named envoy or experiment does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the request itself is malformed.
	ErrInvalid = errors.New("invalid argument")
	// ErrConflict means the request clashes with the current state.
	ErrConflict = errors.New("conflict")
	// ErrPermission means the caller may not do this.
	ErrPermission = errors.New("permission denied")
)

// toStatus maps a domain error to a gRPC status. Errors it does not know are
// logged and returned as Internal, so no internal detail leaks to callers.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrConflict):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrPermission):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	log.ErrorContext(ctx, "internal error", keyMethod, method, keyErr, err)
	return status.Error(codes.Internal, "internal error")
}
