package envoy

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
)

func TestTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"unavailable", status.Error(codes.Unavailable, "connection refused"), true},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), true},
		{"busy", status.Error(codes.ResourceExhausted, fmt.Errorf("%w: 127.0.0.1 has 2 experiment archive downloads in progress", api.ErrBusy).Error()), true},
		{"too large", status.Error(codes.ResourceExhausted, fmt.Errorf("%w: task results over the cap", api.ErrTooLarge).Error()), false},
		{"grpc message size", status.Error(codes.ResourceExhausted, "grpc: received message larger than max"), false},
		{"not found", status.Error(codes.NotFound, "no such experiment"), false},
		{"plain error", errors.New("disk full"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transient(tt.err); got != tt.want {
				t.Fatalf("transient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
