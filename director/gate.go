package director

import (
	"fmt"
	"sync"

	"github.com/fedplane/fedplane/api"
)

// Bounds of the director's one downloads gate (Director.EnterDownload):
// each download is a whole model (one gRPC message) or a results bundle
// zipped on the fly, so a few at a time keep the director's memory and disk
// bounded, whatever the callers ask.
const (
	MaxDownloads          = 4
	MaxDownloadsPerCaller = 2
)

// EnterDownload admits one heavy reply for caller (a name for the
// per-caller bound: "kind:name" of a certificate, or a host without TLS),
// or refuses it with api.ErrBusy. Call release once the reply is sent.
func (d *Director) EnterDownload(caller string) (release func(), err error) {
	return d.downloads.Enter(caller)
}

// Gate bounds how many requests of one kind (model downloads, uploads of
// experiments) are in progress, per caller and overall. A request past
// either bound is refused at once with api.ErrBusy rather than queued:
// a queue would hold the caller's connection and memory all the same.
type Gate struct {
	what      string
	total     int
	perCaller int

	mu sync.Mutex
	n  int
	by map[string]int
}

// NewGate returns a gate for requests named what ("model downloads"),
// admitting total at once and perCaller of them for one caller.
func NewGate(what string, total, perCaller int) *Gate {
	return &Gate{what: what, total: total, perCaller: perCaller, by: map[string]int{}}
}

// Enter admits a request of caller, or refuses it with api.ErrBusy. The
// caller calls release once the request is done.
func (g *Gate) Enter(caller string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.by[caller] >= g.perCaller:
		return nil, fmt.Errorf("%w: %s has %d %s in progress, the most one caller may have; try again when one is done", api.ErrBusy, caller, g.by[caller], g.what)
	case g.n >= g.total:
		return nil, fmt.Errorf("%w: %d %s in progress, the most the director serves at once; try again", api.ErrBusy, g.n, g.what)
	}
	g.n++
	g.by[caller]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.n--
			if g.by[caller]--; g.by[caller] == 0 {
				delete(g.by, caller)
			}
		})
	}, nil
}
