package admin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// caller identifies the peer of an admin connection. With TLS it completes
// the handshake (bounded by the idle timeout) and reads the verified
// certificate; without, the caller is a local project_admin named by the
// request (see read).
func (s *Server) caller(c net.Conn) (director.Caller, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return director.Caller{Name: anonymous, Role: pki.RoleProjectAdmin}, nil
	}
	tc.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
	if err := tc.Handshake(); err != nil {
		return director.Caller{}, fmt.Errorf("tls handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	id, ok := pki.FromConnState(tc.ConnectionState())
	if !ok {
		return director.Caller{}, errors.New("no verified client certificate")
	}
	return director.Caller{Name: id.Name, Org: id.Org, Role: id.Role}, nil
}
