package director

import (
	"context"
	"fmt"

	"github.com/fedplane/fedplane/director/metrics"
)

// Prometheus is what the director records for Prometheus; the adapters count
// their calls and bytes in it too.
func (d *Director) Prometheus() *metrics.Director { return d.metrics }

// Gauges computes the scrape-time gauges (metrics.Source): envoys by
// liveness judged now, jobs by status from the store, and the heartbeat
// lag.
func (d *Director) Gauges(ctx context.Context) (metrics.Gauges, error) {
	counts, err := d.db.CountExperiments(ctx)
	if err != nil {
		return metrics.Gauges{}, err
	}
	total, online, lag := d.reg.count()
	return metrics.Gauges{EnvoysOnline: online, EnvoysOffline: total - online, Jobs: counts, HeartbeatLag: lag}, nil
}

// Ready reports whether the director takes work: not draining, and its
// store answers a read.
func (d *Director) Ready(ctx context.Context) error {
	if d.draining() {
		return errStopping
	}
	if _, err := d.db.CountExperiments(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}
