package metrics

import (
	"context"
	"net/http"

	"github.com/fedplane/fedplane/api/scrape"
)

// Handler serves /metrics from m's registry, /healthz (200 while the
// process serves HTTP at all) and /readyz (200 when ready returns nil, 503
// with its error otherwise, as while the director drains).
func (m *Director) Handler(ready func(context.Context) error) http.Handler {
	return scrape.Handler(m.reg, ready)
}
