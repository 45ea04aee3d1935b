package director

import (
	"fmt"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

// This file decides what a caller may do. Who the caller is comes from the
// adapters: the verified client certificate with TLS (CN the name, OU the
// kind or role, O the organisation), or, without TLS, a trusted local
// caller (the director then listens on loopback only).

// Caller is who makes a gRPC call or an admin request.
type Caller struct {
	Name string
	Org  string
	// Kind is the certificate's kind (pki.KindEnvoy, pki.KindAdmin, ...);
	// Role an admin's role.
	Kind string
	Role string
}

// Right is what an admin needs for an action, after NVIDIA FLARE's default
// authorization policy.
type Right int

const (
	// RightView lists and reads jobs, envoys and metrics: every admin role.
	RightView Right = iota
	// RightSubmit submits jobs: leads and project admins.
	RightSubmit
	// RightManageOwn aborts, deletes and downloads a job and fetches its
	// models: its own for a lead, any for a project_admin. The role is
	// checked here, the job's owner where the job is known (canManage).
	RightManageOwn
	// RightProjectAdmin changes the federation itself (forgets an envoy):
	// project admins only.
	RightProjectAdmin
)

// Who names the identities a rule admits.
type Who int

const (
	// Envoys admits envoy certificates only. Each acts only as itself: the
	// adapter compares the envoy name a request carries with the
	// certificate's CN.
	Envoys Who = iota + 1
	// Admins admits admin certificates whose role has the rule's Right.
	Admins
	// EnvoysAndAdmins admits envoy certificates and admin certificates
	// whose role has the rule's Right.
	EnvoysAndAdmins
)

// Rule says who may call one gRPC method or admin command.
type Rule struct {
	Who   Who
	Right Right // what an admin needs; unused for Envoys
}

// rules is the one authorization table: every gRPC method of both OpenFL
// services (by full method name) and every admin command, and who may call
// it. What is not in it is refused: a test walks the registered methods
// and commands and fails on any that it does not name.
var rules = map[string]Rule{
	// The envoys' calls.
	directorpb.Director_UpdateShardInfo_FullMethodName:          {Who: Envoys},
	directorpb.Director_UpdateEnvoyStatus_FullMethodName:        {Who: Envoys},
	directorpb.Director_WaitExperiment_FullMethodName:           {Who: Envoys},
	directorpb.Director_GetExperimentData_FullMethodName:        {Who: Envoys},
	directorpb.Director_SetExperimentFailed_FullMethodName:      {Who: Envoys},
	aggregatorpb.Aggregator_GetTasks_FullMethodName:             {Who: Envoys},
	aggregatorpb.Aggregator_GetAggregatedTensor_FullMethodName:  {Who: Envoys},
	aggregatorpb.Aggregator_SendLocalTaskResults_FullMethodName: {Who: Envoys},
	// fedplane's own service beside OpenFL's: shared training logs.
	logspb.TrainingLogs_SendTrainingLog_FullMethodName: {Who: Envoys},
	transferspb.Transfers_ResultsOffset_FullMethodName: {Who: Envoys},

	// Federation facts that envoys and admins both read; GetEnvoys hides
	// which experiment runs where from envoys (Caller.CanView).
	directorpb.Director_GetEnvoys_FullMethodName:      {Who: EnvoysAndAdmins, Right: RightView},
	directorpb.Director_GetDatasetInfo_FullMethodName: {Who: EnvoysAndAdmins, Right: RightView},

	// OpenFL frontends' calls.
	directorpb.Director_GetExperimentsList_FullMethodName:           {Who: Admins, Right: RightView},
	directorpb.Director_GetExperimentDescription_FullMethodName:     {Who: Admins, Right: RightView},
	aggregatorpb.Aggregator_GetExperimentDescription_FullMethodName: {Who: Admins, Right: RightView},
	directorpb.Director_GetExperimentStatus_FullMethodName:          {Who: Admins, Right: RightView},
	directorpb.Director_GetMetricStream_FullMethodName:              {Who: Admins, Right: RightView},
	aggregatorpb.Aggregator_GetMetricStream_FullMethodName:          {Who: Admins, Right: RightView},
	directorpb.Director_SetNewExperiment_FullMethodName:             {Who: Admins, Right: RightSubmit},
	directorpb.Director_GetTrainedModel_FullMethodName:              {Who: Admins, Right: RightManageOwn},
	aggregatorpb.Aggregator_GetTrainedModel_FullMethodName:          {Who: Admins, Right: RightManageOwn},
	directorpb.Director_RemoveExperimentData_FullMethodName:         {Who: Admins, Right: RightManageOwn},

	// Admin commands (fladmin).
	api.CmdListJobs:     {Who: Admins, Right: RightView},
	api.CmdGetJobMeta:   {Who: Admins, Right: RightView},
	api.CmdGetMetrics:   {Who: Admins, Right: RightView},
	api.CmdListEnvoys:   {Who: Admins, Right: RightView},
	api.CmdCheckStatus:  {Who: Admins, Right: RightView},
	api.CmdSubmitJob:    {Who: Admins, Right: RightSubmit},
	api.CmdUploadStatus: {Who: Admins, Right: RightSubmit},
	api.CmdAbortJob:     {Who: Admins, Right: RightManageOwn},
	api.CmdDeleteJob:    {Who: Admins, Right: RightManageOwn},
	api.CmdDownloadJob:  {Who: Admins, Right: RightManageOwn},
	api.CmdGetLog:       {Who: Admins, Right: RightManageOwn},
	api.CmdRemoveEnvoy:  {Who: Admins, Right: RightProjectAdmin},
	api.CmdGetEvents:    {Who: Admins, Right: RightView},
	api.CmdGetAudit:     {Who: Admins, Right: RightProjectAdmin},
	// A console login is a view of what the caller may view already.
	api.CmdConsoleLogin: {Who: Admins, Right: RightView},
	// FLARE 2.6's client: the second step of download_job, and its login
	// and session commands (any admin logs in; what it may do is checked
	// per command all the same).
	api.CmdDownloadJobFile: {Who: Admins, Right: RightManageOwn},
	api.CmdDownloadJobZip:  {Who: Admins, Right: RightManageOwn},
	api.CmdCertLogin:       {Who: Admins, Right: RightView},
	api.CmdCommands:        {Who: Admins, Right: RightView},
	api.CmdCheckSession:    {Who: Admins, Right: RightView},
	api.CmdLogout:          {Who: Admins, Right: RightView},
}

// RuleOf returns the rule of a gRPC full method name or an admin command,
// if the table names it.
func RuleOf(action string) (Rule, bool) {
	r, ok := rules[action]
	return r, ok
}

// Authorize says whether c may call action (a gRPC full method name or an
// admin command) at all; jobs owned by others are checked again where the
// job is known (canManage), and an envoy's own name where the request
// names it. An action the table does not name is refused. Refusals wrap
// api.ErrNotAllowed.
func Authorize(c Caller, action string) error {
	r, ok := rules[action]
	if !ok {
		return fmt.Errorf("%w: %s is not in the authorization table", api.ErrNotAllowed, action)
	}
	envoy, admin := c.Kind == pki.KindEnvoy, pki.IsAdminRole(c.Role)
	switch {
	case r.Who == Envoys && !envoy:
		return fmt.Errorf("%w: %s is for envoys, and %q's certificate is not an envoy's", api.ErrNotAllowed, action, c.Name)
	case r.Who == Envoys, r.Who == EnvoysAndAdmins && envoy:
		return nil
	case !admin:
		return fmt.Errorf("%w: %s has no admin role in its certificate: %s needs project_admin, lead or member", api.ErrNotAllowed, c.Name, action)
	case r.Right == RightSubmit && c.Role == pki.RoleMember:
		return fmt.Errorf("%w: %s is a member: members may only view; %s needs the lead or project_admin role", api.ErrNotAllowed, c.Name, action)
	case r.Right == RightManageOwn && c.Role == pki.RoleMember:
		return fmt.Errorf("%w: %s is a member: members may only view; %s needs the lead role (own jobs) or project_admin", api.ErrNotAllowed, c.Name, action)
	case r.Right == RightProjectAdmin && c.Role != pki.RoleProjectAdmin:
		return fmt.Errorf("%w: %s is a %s: %s needs the project_admin role", api.ErrNotAllowed, c.Name, c.Role, action)
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
