package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// caller establishes who is on raw and returns the connection to speak on.
// Without TLS the caller is a local project_admin named by the request (see
// read). With TLS it runs the handshake, bounded by the idle timeout, and
// reads the verified certificate; the handshake runs on a recorder, so that
// a client in the clear (fladmin without --tls-*, an envoy, curl) is told
// in its own protocol what it reached. ok is false when the connection is
// done with: refused, or answered so.
func (s *Server) caller(raw net.Conn, log *slog.Logger) (conn net.Conn, who director.Caller, ok bool) {
	if s.cfg.TLS == nil {
		return raw, director.Caller{Name: anonymous, Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}, true
	}
	rec := &handshakeRecorder{Conn: raw}
	tc := tls.Server(rec, s.cfg.TLS)
	raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) && rh.Conn != nil {
			if msg, ok := plaintextOnTLSReply(rh.RecordHeader[:]); ok {
				log.Warn("admin connection in the clear on the TLS port", api.LogReason, msg)
				answerWrongPort(struct {
					io.Reader
					io.Writer
				}{rec.replay(), raw}, msg)
				return nil, director.Caller{}, false
			}
		}
		log.Warn("admin connection refused", api.LogErr, fmt.Errorf("tls handshake: %w", err))
		return nil, director.Caller{}, false
	}
	rec.stop()
	raw.SetDeadline(time.Time{})
	id, ok := pki.FromConnState(tc.ConnectionState())
	if !ok {
		log.Warn("admin connection refused", api.LogErr, errors.New("no verified client certificate"))
		return nil, director.Caller{}, false
	}
	who = director.Caller{Name: id.Name, Org: id.Org, Kind: id.Kind, Role: id.Role}
	if !pki.IsAdminRole(id.Role) {
		// Refused before it takes a slot or sends a byte of request: a
		// certificate that may do nothing here (an envoy's) must not hold
		// admin connections.
		err := director.Authorize(who, api.CmdCheckStatus)
		if err == nil {
			err = fmt.Errorf("%w: %s has no admin role in its certificate", api.ErrNotAllowed, id.Name)
		}
		log.Warn("admin connection refused", api.LogCaller, id.Name, api.LogKind, id.Kind, api.LogErr, err)
		tc.SetDeadline(time.Now().Add(time.Second))
		reply := s.errorReply(context.Background(), "", err)
		// Unread, the request may be FLARE's _cert_login: its client
		// takes a login as refused only after the string REJECT.
		rejectLogin(reply)
		adminproto.WriteMessage(tc, reply)
		tc.Close()
		return nil, director.Caller{}, false
	}
	return tc, who, true
}
