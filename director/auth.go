package director

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

// This file decides who a caller is and what it may do.
//
// With TLS, identity is the verified client certificate: its CN names the
// envoy or the admin, its OU carries the kind (envoy, director) or an
// admin's role, its O the organisation (see package pki). Without TLS the
// director listens on loopback only, and every local caller is trusted as
// project_admin; OpenFL's client_id header then names frontend callers.

// Admin rights, after NVIDIA FLARE's default authorization policy.
type right int

const (
	rightView      right = iota // list and read anything
	rightSubmit                 // submit jobs
	rightManageOwn              // abort, delete, download: own jobs (project_admin: any)
)

// adminRights is what each admin command needs.
var adminRights = map[string]right{
	"submit_job":   rightSubmit,
	"list_jobs":    rightView,
	"get_job_meta": rightView,
	"get_metrics":  rightView,
	"list_envoys":  rightView,
	"check_status": rightView,
	"abort_job":    rightManageOwn,
	"delete_job":   rightManageOwn,
	"download_job": rightManageOwn,
}

// mayRun says whether a caller's role allows a command at all; jobs owned by
// others are checked again by mayManage.
func mayRun(c caller, command string) error {
	need, ok := adminRights[command]
	if !ok {
		return nil // unknown commands get their own syntax error
	}
	switch {
	case !pki.IsAdminRole(c.Role):
		return fmt.Errorf("%s has no admin role in its certificate: only project_admin, lead and member may use the admin port", c.Name)
	case need == rightSubmit && c.Role == pki.RoleMember:
		return fmt.Errorf("%s is a member: members may only view; submitting needs the lead or project_admin role", c.Name)
	case need == rightManageOwn && c.Role == pki.RoleMember:
		return fmt.Errorf("%s is a member: members may only view", c.Name)
	}
	return nil
}

// mayManage says whether a caller may abort, delete or download job e: a
// project_admin any job, a lead the jobs it submitted (same name and org).
func mayManage(c caller, e store.Experiment) error {
	if c.Role == pki.RoleProjectAdmin || (c.Role == pki.RoleLead && c.Name == e.Submitter && c.Org == e.SubmitterOrg) {
		return nil
	}
	return fmt.Errorf("%s (%s) may not manage job %s, submitted by %s: a lead manages only its own jobs", c.Name, c.Role, e.ID, e.Submitter)
}

// mayView says whether a caller sees jobs: admins (any role) see every job;
// other identities (an envoy's certificate, say), which cannot submit, see
// none.
func mayView(c caller, _ store.Experiment) bool {
	return pki.IsAdminRole(c.Role)
}

// checkEnvoy refuses an envoy RPC whose claimed name is not the caller's
// certificate CN (and whose certificate is not an envoy's). Without TLS
// names are trusted: the director listens on loopback only.
func (d *Director) checkEnvoy(ctx context.Context, method, name string) error {
	if d.cfg.TLS == nil {
		return nil
	}
	id, ok := pki.FromContext(ctx)
	switch {
	case !ok:
		return fmt.Errorf("%w: no client certificate", ErrPermission)
	case id.Kind != pki.KindEnvoy:
		d.log.WarnContext(ctx, "refused: not an envoy certificate", keyMethod, method, "cn", id.Name, "kind", id.Kind)
		return fmt.Errorf("%w: certificate %q is not an envoy's", ErrPermission, id.Name)
	case id.Name != name:
		d.log.WarnContext(ctx, "refused: name differs from the certificate", keyMethod, method, "cn", id.Name, "claimed", name)
		return fmt.Errorf("%w: certificate CN %q may not act as envoy %q", ErrPermission, id.Name, name)
	}
	return nil
}

// grpcCaller names the caller of a frontend RPC: the certificate with TLS,
// OpenFL's client_id header (default "__default__") without.
func (d *Director) grpcCaller(ctx context.Context) caller {
	if d.cfg.TLS == nil {
		return caller{Name: clientID(ctx), Role: pki.RoleProjectAdmin}
	}
	id, _ := pki.FromContext(ctx)
	return caller{Name: id.Name, Org: id.Org, Role: id.Role}
}

// adminCaller identifies the peer of an admin connection. With TLS it
// completes the handshake (bounded by the idle timeout) and reads the
// certificate; without, the caller is a local project_admin named by the
// request (see readAdminRequest).
func (d *Director) adminCaller(c net.Conn) (caller, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return caller{Name: anonymous, Role: pki.RoleProjectAdmin}, nil
	}
	tc.SetDeadline(time.Now().Add(d.cfg.AdminIdleTimeout))
	if err := tc.Handshake(); err != nil {
		return caller{}, fmt.Errorf("tls handshake: %w", err)
	}
	tc.SetDeadline(time.Time{})
	id, ok := pki.FromConnState(tc.ConnectionState())
	if !ok {
		return caller{}, fmt.Errorf("no verified client certificate")
	}
	return caller{Name: id.Name, Org: id.Org, Role: id.Role}, nil
}

// checkLoopback refuses to serve without TLS anywhere but on loopback
// addresses, unless told --insecure.
func (c *Config) checkLoopback() error {
	if c.TLS != nil || c.Insecure {
		return nil
	}
	for _, a := range []struct{ flag, addr string }{{"grpc-listen", c.GRPCListen}, {"admin-listen", c.AdminListen}} {
		host, _, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("--%s %q: %w", a.flag, a.addr, err)
		}
		if !isLoopback(host) {
			return fmt.Errorf("--%s %s is not a loopback address and no TLS certificates are set: "+
				"give --tls-ca, --tls-cert and --tls-key (see `director pki`), or --insecure to serve in the clear anyway", a.flag, a.addr)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
