package director

import (
	"testing"

	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

func TestRoleTable(t *testing.T) {
	job := store.Experiment{ID: "j1", Submitter: "lead1"}
	tests := []struct {
		caller  Caller
		command string
		run     bool // mayRun
		manage  bool // canManage(job), for commands that manage a job
	}{
		{Caller{Name: "boss", Role: pki.RoleProjectAdmin}, "submit_job", true, false},
		{Caller{Name: "boss", Role: pki.RoleProjectAdmin}, "abort_job", true, true},
		{Caller{Name: "boss", Role: pki.RoleProjectAdmin}, "delete_job", true, true},
		{Caller{Name: "lead1", Role: pki.RoleLead}, "submit_job", true, false},
		{Caller{Name: "lead1", Role: pki.RoleLead}, "abort_job", true, true},
		{Caller{Name: "lead1", Role: pki.RoleLead}, "download_job", true, true},
		{Caller{Name: "lead2", Role: pki.RoleLead}, "abort_job", true, false},
		{Caller{Name: "lead2", Role: pki.RoleLead}, "delete_job", true, false},
		{Caller{Name: "lead2", Role: pki.RoleLead}, "list_jobs", true, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "list_jobs", true, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "get_job_meta", true, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "list_envoys", true, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "submit_job", false, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "abort_job", false, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "download_job", false, false},
		{Caller{Name: "site-a"}, "check_status", false, false},
		{Caller{Name: "site-a", Kind: pki.KindEnvoy}, "list_envoys", false, false},
		{Caller{Name: "boss", Role: pki.RoleProjectAdmin}, "remove_envoy", true, false},
		{Caller{Name: "lead1", Role: pki.RoleLead}, "remove_envoy", false, false},
		{Caller{Name: "viewer", Role: pki.RoleMember}, "remove_envoy", false, false},
		{Caller{Name: "boss", Role: pki.RoleProjectAdmin}, "no_such_command", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.caller.Name+" "+tt.command, func(t *testing.T) {
			if err := Authorize(tt.caller, tt.command); (err == nil) != tt.run {
				t.Fatalf("Authorize: got %v, want allowed=%v", err, tt.run)
			}
			if r, _ := RuleOf(tt.command); r.Right == RightManageOwn && tt.run {
				if err := canManage(tt.caller, job); (err == nil) != tt.manage {
					t.Fatalf("canManage: got %v, want allowed=%v", err, tt.manage)
				}
			}
		})
	}
	if !(Caller{Name: "viewer", Role: pki.RoleMember}).CanView() || (Caller{Name: "lead1"}).CanView() {
		t.Fatal("CanView: admins see every job; a certificate without an admin role (an envoy's named like the submitter) sees none")
	}
	if err := canManage(Caller{Name: "lead1", Org: "other-org", Role: pki.RoleLead}, store.Experiment{ID: "j", Submitter: "lead1", SubmitterOrg: "org-a"}); err == nil {
		t.Fatal("canManage: a lead of another org with the same name manages the job")
	}
}
