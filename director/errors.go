package director

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
)

// toStatus maps an error to a gRPC status through api's table of error
// kinds. Errors of no kind are logged and returned as Internal, so no
// internal detail leaks to callers.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, _, internal := api.Codes(err)
	if internal {
		log.ErrorContext(ctx, "internal error", api.LogMethod, method, api.LogErr, err)
		return status.Error(code, api.InternalMessage)
	}
	return status.Error(code, err.Error())
}
