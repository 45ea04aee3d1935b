package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The gRPC calls are counted by an interceptor, not a stats.Handler: a
// stats handler sees every message and header of every call, which cost
// the heartbeat benchmark a tenth of its rate; the interceptor does one
// map lookup and one atomic add per call.

// callKey is one series of fedplane_grpc_calls_total. Methods are those
// registered on the server (gRPC answers an unknown one before any
// interceptor), so the set is bounded.
type callKey struct {
	method string
	code   codes.Code
}

func (m *Director) countCall(method string, err error) {
	k := callKey{method, status.Code(err)}
	c, ok := m.calls.Load(k)
	if !ok {
		c, _ = m.calls.LoadOrStore(k, m.grpc.WithLabelValues(method, k.code.String()))
	}
	c.(prometheus.Counter).Inc()
}

// UnaryInterceptor counts unary calls by method and the code they end
// with. Chain it first, so it sees the status the caller gets.
func (m *Director) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		m.countCall(info.FullMethod, err)
		return resp, err
	}
}

// StreamInterceptor counts streaming calls as UnaryInterceptor does.
func (m *Director) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		m.countCall(info.FullMethod, err)
		return err
	}
}
