package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/server"
	"github.com/fedplane/fedplane/store"
	"github.com/google/uuid"
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

// errLeaseLost stops a coordinator that could not keep its lease.
var errLeaseLost = errors.New("lost the coordinator lease: another replica may have taken over; stopping")

// lease is a held coordinator lease.
type lease struct {
	db     *store.DB
	holder string
	ttl    time.Duration
	epoch  int64
	log    *slog.Logger
}

// acquireLease waits until holder holds the coordinator lease, trying every
// third of ttl, and returns it; or returns ctx's error. seen is told who
// holds the lease after each try that did not take it ("" for no one).
func acquireLease(ctx context.Context, db *store.DB, holder string, ttl time.Duration, log *slog.Logger, seen func(current string)) (*lease, error) {
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
		default:
			if !waiting {
				log.Info("standby: another replica holds the coordinator lease; waiting to take over", api.LogHolder, holder, api.LogPeriod, ttl)
				waiting = true
			}
			current := ""
			if cur, err := db.GetLease(ctx, coordinatorLease); err == nil && cur.Held(time.Now()) {
				current = cur.Holder
			}
			seen(current)
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

// isPostgres says whether dsn names a PostgreSQL database: directors on one
// are replicas, and take the coordinator lease to act.
func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// leaseTTL is --lease-ttl, or its default: one health-check period, at
// least a second, so that a standby takes over well within two periods
// of the coordinator's death.
func (o *serveOptions) leaseTTL() time.Duration {
	if o.leaseTTLFlag > 0 {
		return o.leaseTTLFlag
	}
	return max(o.healthCheckPeriod, time.Second)
}

// serveReplica runs this director as one replica on a shared database.
// It listens on the gRPC and admin addresses at once; as a standby it
// relays their connections to the coordinator, whoever holds the lease;
// once it takes the lease it opens the director (resuming the running
// experiments from the database, as after a restart) and serves them
// itself, until ctx ends or it loses the lease. A clean stop releases the
// lease so a standby takes over at once.
func (o *serveOptions) serveReplica(ctx context.Context, stop func(), log *slog.Logger, srv server.Config, dcfg director.Config) error {
	ldb, err := store.Open(ctx, o.database, store.Options{Readers: 2})
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer ldb.Close()
	lis, err := net.Listen("tcp", srv.GRPCListen)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	adminLis, err := net.Listen("tcp", srv.AdminListen)
	if err != nil {
		lis.Close()
		return fmt.Errorf("admin listen: %w", err)
	}
	advGRPC, err := advertised(o.advertiseGRPC, lis.Addr())
	if err == nil {
		var advAdmin string
		if advAdmin, err = advertised(o.advertiseAdmin, adminLis.Addr()); err == nil {
			return o.serveReplicaOn(ctx, stop, log, ldb, srv, dcfg, lis, adminLis, replicaID(advGRPC, advAdmin))
		}
	}
	lis.Close()
	adminLis.Close()
	return err
}

func (o *serveOptions) serveReplicaOn(ctx context.Context, stop func(), log *slog.Logger, ldb *store.DB, srv server.Config, dcfg director.Config, lis, adminLis net.Listener, holder string) error {
	// The switches outlive ctx until the director has stopped serving, so
	// that the director's stop is an orderly one, not a closed listener.
	var coordinator atomic.Value // the holder standbys relay to
	coordinator.Store("")
	gsw := server.NewSwitch(lis, "grpc", func() string { a, _ := holderAddrs(coordinator.Load().(string)); return a }, 0, log)
	asw := server.NewSwitch(adminLis, "admin", func() string { _, a := holderAddrs(coordinator.Load().(string)); return a }, 0, log)
	swCtx, swStop := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer swStop()
	for _, sw := range []*server.Switch{gsw, asw} {
		wg.Go(func() {
			if err := sw.Run(swCtx); err != nil {
				log.Error("replica port stopped", api.LogErr, err)
				stop()
			}
		})
	}
	// Tests and scripts read the bound addresses from this line.
	log.Info("director replica listening", api.LogGRPC, lis.Addr().String(), api.LogAdmin, adminLis.Addr().String(), api.LogHolder, holder)

	ttl := o.leaseTTL()
	myGRPC, myAdmin := holderAddrs(holder)
	l, err := acquireLease(ctx, ldb, holder, ttl, log, func(current string) {
		if g, a := holderAddrs(current); g == myGRPC || a == myAdmin {
			// A lease left by an earlier run of this replica on the same
			// ports (killed, restarted): relaying to it would be relaying
			// to itself. Hold connections until the lease lapses.
			current = ""
		}
		if coordinator.Swap(current) != current && current != "" {
			g, a := holderAddrs(current)
			log.Info("standby: relaying to the coordinator", api.LogTarget, current, api.LogGRPC, g, api.LogAdmin, a)
		}
	})
	if err != nil {
		return nil // ctx ended while standing by: a clean stop
	}
	dcfg.Lease = &store.Lease{Name: coordinatorLease, Holder: holder, Epoch: l.epoch}
	if err := srv.ListenSide(); err != nil {
		l.release()
		return err
	}
	var leaseErr error
	kctx, kstop := context.WithCancel(ctx)
	var kwg sync.WaitGroup
	kwg.Go(func() {
		if leaseErr = l.keep(kctx); leaseErr != nil {
			log.Error("coordinator lease lost", api.LogErr, leaseErr)
			stop()
		}
	})
	runErr := serveDirector(ctx, dcfg, func(d *director.Director) error {
		return server.Serve(ctx, d, srv, gsw.Serve(), asw.Serve())
	})
	kstop()
	kwg.Wait()
	if leaseErr != nil {
		return leaseErr
	}
	l.release()
	return runErr
}
