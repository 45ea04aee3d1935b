package admin

import (
	"context"
	"fmt"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// consoleLogin returns a one-time link that logs a browser in to the web
// console as the caller, with the caller's role. The link is a secret: it
// goes to the caller only, never to a log or the audit trail.
func (s *Server) consoleLogin(ctx context.Context, req *request) (*adminproto.Message, error) {
	if err := s.noArgs(req); err != nil {
		return nil, err
	}
	if s.cfg.ConsoleLogin == nil {
		return nil, fmt.Errorf("%w: the director serves no web console: start it with director serve --web-listen", api.ErrUnavailable)
	}
	url, expires, err := s.cfg.ConsoleLogin(req.caller)
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaURL: url, api.MetaExpires: expires},
		adminproto.Item{Type: adminproto.TypeString, Data: url}), nil
}
