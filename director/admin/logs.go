package admin

import (
	"context"
	"fmt"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// getLog returns an envoy's training log of a job (director.TrainingLog):
// get_log <job_id> <envoy_name>. The log travels in meta (api.MetaLog,
// its bytes base64), not as an item: a 4 MiB log as a JSON string could
// outgrow the exchange's text limit with its escapes.
func (s *Server) getLog(ctx context.Context, req *request) (*adminproto.Message, error) {
	if len(req.args) != 2 {
		return nil, s.usage(req.name, "give a job id and an envoy name")
	}
	envoy := req.args[1]
	req.args = req.args[:1]
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	l, err := s.d.TrainingLog(ctx, req.caller, e, envoy)
	if err != nil {
		return nil, err
	}
	text := fmt.Sprintf("Training log of %s for job %s: %d bytes, received %s", l.Envoy, l.JobID, l.Size, l.TakenAt.Format(time.RFC3339))
	return replyOK(map[string]any{api.MetaJobID: l.JobID, api.MetaLog: l}, adminproto.Item{Type: adminproto.TypeString, Data: text}), nil
}
