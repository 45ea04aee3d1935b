package director

import (
	"fmt"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

// This file decides what a caller may do. Who the caller is comes from the
// adapters: the verified client certificate with TLS (CN the name, OU the
// role, O the organisation), or, without TLS, a trusted local caller (the
// director then listens on loopback only).

// Caller is who makes an admin or frontend request.
type Caller struct {
	Name string
	Org  string
	Role string
}

// Right is what an action needs, after NVIDIA FLARE's default
// authorization policy.
type Right int

const (
	// RightView lists and reads jobs, envoys and metrics.
	RightView Right = iota
	// RightSubmit submits jobs.
	RightSubmit
	// RightManageOwn aborts, deletes and downloads jobs: its own for a lead,
	// any for a project_admin.
	RightManageOwn
)

// Frontend actions of OpenFL's Director service, named in the table
// beside the admin commands.
const (
	ActionSetNewExperiment     = "SetNewExperiment"
	ActionRemoveExperimentData = "RemoveExperimentData"
)

// rights is the one authorization table: what each admin command and each
// frontend call that changes a job needs. Frontend calls that only read
// show the jobs a caller may view (canView) and need no row.
var rights = map[string]Right{
	api.CmdSubmitJob:           RightSubmit,
	api.CmdListJobs:            RightView,
	api.CmdGetJobMeta:          RightView,
	api.CmdGetMetrics:          RightView,
	api.CmdListEnvoys:          RightView,
	api.CmdCheckStatus:         RightView,
	api.CmdAbortJob:            RightManageOwn,
	api.CmdDeleteJob:           RightManageOwn,
	api.CmdDownloadJob:         RightManageOwn,
	ActionSetNewExperiment:     RightSubmit,
	ActionRemoveExperimentData: RightManageOwn,
}

// NeedsRight reports the right an action needs, if the table names it.
func NeedsRight(action string) (Right, bool) {
	r, ok := rights[action]
	return r, ok
}

// Authorize says whether c's role allows action at all; jobs owned by
// others are checked again where the job is known (canManage). Actions the
// table does not name are allowed here: an adapter refuses unknown
// commands itself. Refusals wrap api.ErrNotAllowed.
func Authorize(c Caller, action string) error {
	need, ok := rights[action]
	if !ok {
		return nil
	}
	switch {
	case !pki.IsAdminRole(c.Role):
		return fmt.Errorf("%w: %s has no admin role in its certificate: only project_admin, lead and member may use the admin port", api.ErrNotAllowed, c.Name)
	case need == RightSubmit && c.Role == pki.RoleMember:
		return fmt.Errorf("%w: %s is a member: members may only view; submitting needs the lead or project_admin role", api.ErrNotAllowed, c.Name)
	case need == RightManageOwn && c.Role == pki.RoleMember:
		return fmt.Errorf("%w: %s is a member: members may only view", api.ErrNotAllowed, c.Name)
	}
	return nil
}

// canManage says whether c may abort, delete or download job e: a
// project_admin any job, a lead the jobs it submitted (same name and org).
func canManage(c Caller, e store.Experiment) error {
	if c.Role == pki.RoleProjectAdmin || (c.Role == pki.RoleLead && c.Name == e.Submitter && c.Org == e.SubmitterOrg) {
		return nil
	}
	return fmt.Errorf("%w: %s (%s) may not manage job %s, submitted by %s: a lead manages only its own jobs",
		api.ErrNotAllowed, c.Name, c.Role, e.ID, e.Submitter)
}

// CanView says whether c sees jobs: admins (any role) see every job; other
// identities (an envoy's certificate, say), which cannot submit, see none.
func (c Caller) CanView() bool {
	return pki.IsAdminRole(c.Role)
}
