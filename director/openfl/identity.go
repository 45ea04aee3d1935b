package openfl

import (
	"context"
	"fmt"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// checkEnvoy refuses an envoy RPC whose claimed name is not the caller's
// certificate CN (and whose certificate is not an envoy's). Without TLS
// names are trusted: the director listens on loopback only.
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
		return director.Caller{Name: clientID(ctx), Role: pki.RoleProjectAdmin}
	}
	id, _ := pki.FromContext(ctx)
	return director.Caller{Name: id.Name, Org: id.Org, Role: id.Role}
}

// authorize establishes the caller of a frontend RPC that changes a job and
// checks the authorization table for action.
func (s *service) authorize(ctx context.Context, action string) (director.Caller, error) {
	who := s.caller(ctx)
	return who, director.Authorize(who, action)
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
