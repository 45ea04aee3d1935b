package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Identity is who a verified client certificate says the peer is.
type Identity struct {
	Name string // CN
	Org  string // first O, if any
	Kind string // KindDirector, KindEnvoy, KindAdmin, or "" if the OU names none
	Role string // an admin's role; "" for other kinds
}

// IdentityOf reads the Identity of a verified leaf certificate. Its first
// OU that names a role makes it an admin with that role; "envoy" or
// "director" make it that kind. Callers must pass only certificates that
// chain to the federation's CA: the subject is what the CA vouched for.
func IdentityOf(cert *x509.Certificate) Identity {
	id := Identity{Name: cert.Subject.CommonName}
	if len(cert.Subject.Organization) > 0 {
		id.Org = cert.Subject.Organization[0]
	}
	for _, ou := range cert.Subject.OrganizationalUnit {
		switch {
		case IsAdminRole(ou):
			id.Kind, id.Role = KindAdmin, ou
			return id
		case ou == KindEnvoy || ou == KindDirector:
			id.Kind = ou
			return id
		}
	}
	return id
}

// IsAdminRole reports whether role is one an admin certificate may carry:
// RoleProjectAdmin, RoleLead or RoleMember.
func IsAdminRole(role string) bool {
	return role == RoleProjectAdmin || role == RoleLead || role == RoleMember
}

// FromConnState reads the Identity of the peer of a TLS connection from its
// verified client certificate. ok is false if the handshake verified none
// (no TLS client certificate, or the handshake has not run): an unverified
// certificate's subject proves nothing, so it is never read.
func FromConnState(st tls.ConnectionState) (id Identity, ok bool) {
	if len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	return IdentityOf(st.VerifiedChains[0][0]), true
}

// FromContext reads the Identity of a gRPC caller from the verified client
// certificate of its connection (see FromConnState). ok is false when ctx
// carries no peer, or the connection is not TLS.
func FromContext(ctx context.Context) (id Identity, ok bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, false
	}
	return FromConnState(info.State)
}
