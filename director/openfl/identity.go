package openfl

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// authUnary checks every unary call against the domain's authorization
// table before its handler runs (see authorize).
func (s *service) authUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// authStream checks every stream against the table before its handler
// reads a byte of it.
func (s *service) authStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// authorize is the one place the OpenFL services decide whether the
// caller may call method at all: a method the table does not name is
// refused, TLS or not; with TLS the caller's certificate must be one the
// method's rule admits. Which envoy a request acts as is checked by the
// handler, which knows the name (checkEnvoy); which jobs a frontend may
// manage, by the domain. Without TLS every caller is trusted, as the
// director then listens on loopback only.
func (s *service) authorize(ctx context.Context, method string) error {
	if _, ok := director.RuleOf(method); !ok {
		s.log.WarnContext(ctx, "refused: method not in the authorization table", api.LogMethod, method)
		return fmt.Errorf("%w: %s is not in the authorization table", api.ErrNotAllowed, method)
	}
	if !s.tls {
		return nil
	}
	id, ok := pki.FromContext(ctx)
	if !ok {
		return fmt.Errorf("%w: no client certificate", api.ErrUnauthenticated)
	}
	if err := director.Authorize(callerOf(id), method); err != nil {
		s.log.WarnContext(ctx, "refused", api.LogMethod, method, api.LogCaller, id.Name, api.LogKind, id.Kind, api.LogRole, id.Role, api.LogErr, err)
		return err
	}
	return nil
}

// callerOf is the caller a verified certificate names.
func callerOf(id pki.Identity) director.Caller {
	return director.Caller{Name: id.Name, Org: id.Org, Kind: id.Kind, Role: id.Role}
}

// checkEnvoy refuses an envoy RPC whose claimed name is not the caller's
// certificate CN; that the certificate is an envoy's, authorize has
// checked. Without TLS names are trusted: the director listens on loopback
// only.
func (s *service) checkEnvoy(ctx context.Context, method, name string) error {
	if !s.tls {
		return nil
	}
	id, ok := pki.FromContext(ctx)
	switch {
	case !ok:
		return fmt.Errorf("%w: no client certificate", api.ErrUnauthenticated)
	case id.Kind != pki.KindEnvoy:
		s.log.WarnContext(ctx, "refused: not an envoy certificate", api.LogMethod, method, api.LogCaller, id.Name, api.LogKind, id.Kind)
		return fmt.Errorf("%w: certificate %q is not an envoy's", api.ErrNotAllowed, id.Name)
	case id.Name != name:
		s.log.WarnContext(ctx, "refused: name differs from the certificate", api.LogMethod, method, api.LogCaller, id.Name, api.LogEnvoy, name)
		return fmt.Errorf("%w: certificate CN %q may not act as envoy %q", api.ErrNotAllowed, id.Name, name)
	}
	return nil
}

// caller names the caller of a frontend RPC: the certificate with TLS,
// OpenFL's client_id header (default "__default__") without.
func (s *service) caller(ctx context.Context) director.Caller {
	if !s.tls {
		return director.Caller{Name: clientID(ctx), Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}
	}
	id, _ := pki.FromContext(ctx)
	return callerOf(id)
}

// clientID is OpenFL's identity header of a caller without TLS.
func clientID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(api.MDClientID); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return "__default__"
}
