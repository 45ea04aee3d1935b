package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fedplane/fedplane/api"
)

// This file is how director replicas on one PostgreSQL database share the
// work: the replica holding the coordinator lease is the director (it
// schedules, sweeps liveness, closes and aggregates rounds, and serves
// envoys and fladmin); the others wait as standbys, listening on nothing,
// and the first to see the lease lapse takes it over and resumes every
// running experiment from the database and the blob store, as a restart
// does. A replica that cannot renew its lease before it could lapse stops
// at once, so two replicas never act as the director together; the
// database refuses the writes of a holder whose lease was taken over
// (the fence), for a replica paused past its lease.

// coordinatorLease is the lease's name in the store.
const coordinatorLease = "coordinator"

// leaser is the store's lease API.
type leaser interface {
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, epoch int64, err error)
	ReleaseLease(ctx context.Context, name, holder string) error
}

// errLeaseLost stops a coordinator that could not keep its lease.
var errLeaseLost = errors.New("lost the coordinator lease: another replica may have taken over; stopping")

// lease is a held coordinator lease.
type lease struct {
	db     leaser
	holder string
	ttl    time.Duration
	epoch  int64
	log    *slog.Logger
}

// acquireLease waits until holder holds the coordinator lease, trying every
// third of ttl, and returns it; or returns ctx's error.
func acquireLease(ctx context.Context, db leaser, holder string, ttl time.Duration, log *slog.Logger) (*lease, error) {
	waiting := false
	for {
		held, epoch, err := db.AcquireLease(ctx, coordinatorLease, holder, ttl)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			log.Warn("coordinator lease: cannot reach the database", api.LogErr, err)
		case held:
			log.Info("coordinator lease taken: this replica is the director", api.LogHolder, holder, api.LogEpoch, epoch)
			return &lease{db: db, holder: holder, ttl: ttl, epoch: epoch, log: log}, nil
		case !waiting:
			log.Info("standby: another replica holds the coordinator lease; waiting to take over", api.LogHolder, holder, api.LogPeriod, ttl)
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(ttl / 3):
		}
	}
}

// keep renews the lease every third of its ttl until ctx ends. It returns
// errLeaseLost when the lease is no longer this replica's, or when it has
// not been renewed for two thirds of ttl (a third before another replica
// may take it), so the caller stops before it could act beside a new
// holder; nil when ctx ends.
func (l *lease) keep(ctx context.Context) error {
	last := time.Now()
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, l.ttl/3)
		held, epoch, err := l.db.AcquireLease(rctx, coordinatorLease, l.holder, l.ttl)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil && held && epoch == l.epoch:
			last = time.Now()
			continue
		case err == nil:
			return fmt.Errorf("%w (now held by another replica)", errLeaseLost)
		}
		if time.Since(last) >= 2*l.ttl/3 {
			return fmt.Errorf("%w: not renewed for %v: %w", errLeaseLost, time.Since(last).Round(time.Millisecond), err)
		}
		l.log.Warn("coordinator lease: renewal failed; retrying", api.LogErr, err)
	}
}

// release gives the lease up at a clean stop, so a standby takes over at
// once instead of after ttl.
func (l *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.db.ReleaseLease(ctx, coordinatorLease, l.holder); err != nil {
		l.log.Warn("coordinator lease: release failed; a standby takes over when it lapses", api.LogErr, err)
	}
}

// replicaID names this replica's hold on the lease: a fresh id per start,
// and the addresses standbys relay its ports' connections to.
func replicaID(grpcAddr, adminAddr string) string {
	return fmt.Sprintf("%s|grpc=%s|admin=%s", uuid.NewString(), grpcAddr, adminAddr)
}

// holderAddrs reads the addresses back out of a holder id; "" where the
// holder gave none.
func holderAddrs(holder string) (grpcAddr, adminAddr string) {
	for _, f := range strings.Split(holder, "|")[1:] {
		switch k, v, _ := strings.Cut(f, "="); k {
		case "grpc":
			grpcAddr = v
		case "admin":
			adminAddr = v
		}
	}
	return grpcAddr, adminAddr
}

// advertised is the address other replicas reach lis at: adv when given,
// else lis's own address, with a wildcard host replaced by this host's
// name.
func advertised(adv string, lis net.Addr) (string, error) {
	if adv != "" {
		return adv, nil
	}
	host, port, err := net.SplitHostPort(lis.String())
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("advertise %s: host name: %w", lis, err)
		}
	}
	return net.JoinHostPort(host, port), nil
}
