package director

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

func TestRoleTable(t *testing.T) {
	job := store.Experiment{ID: "j1", Submitter: "lead1"}
	tests := []struct {
		caller  caller
		command string
		run     bool // mayRun
		manage  bool // mayManage(job), for commands that manage a job
	}{
		{caller{Name: "boss", Role: pki.RoleProjectAdmin}, "submit_job", true, false},
		{caller{Name: "boss", Role: pki.RoleProjectAdmin}, "abort_job", true, true},
		{caller{Name: "boss", Role: pki.RoleProjectAdmin}, "delete_job", true, true},
		{caller{Name: "lead1", Role: pki.RoleLead}, "submit_job", true, false},
		{caller{Name: "lead1", Role: pki.RoleLead}, "abort_job", true, true},
		{caller{Name: "lead1", Role: pki.RoleLead}, "download_job", true, true},
		{caller{Name: "lead2", Role: pki.RoleLead}, "abort_job", true, false},
		{caller{Name: "lead2", Role: pki.RoleLead}, "delete_job", true, false},
		{caller{Name: "lead2", Role: pki.RoleLead}, "list_jobs", true, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "list_jobs", true, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "get_job_meta", true, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "list_envoys", true, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "submit_job", false, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "abort_job", false, false},
		{caller{Name: "viewer", Role: pki.RoleMember}, "download_job", false, false},
		{caller{Name: "site-a"}, "check_status", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.caller.Name+" "+tt.command, func(t *testing.T) {
			if err := mayRun(tt.caller, tt.command); (err == nil) != tt.run {
				t.Fatalf("mayRun: got %v, want allowed=%v", err, tt.run)
			}
			if adminRights[tt.command] == rightManageOwn && tt.run {
				if err := mayManage(tt.caller, job); (err == nil) != tt.manage {
					t.Fatalf("mayManage: got %v, want allowed=%v", err, tt.manage)
				}
			}
		})
	}
	if !mayView(caller{Name: "viewer", Role: pki.RoleMember}, job) || mayView(caller{Name: "lead1"}, job) {
		t.Fatal("mayView: admins see every job; a certificate without an admin role (an envoy's named like the submitter) sees none")
	}
	if err := mayManage(caller{Name: "lead1", Org: "other-org", Role: pki.RoleLead}, store.Experiment{ID: "j", Submitter: "lead1", SubmitterOrg: "org-a"}); err == nil {
		t.Fatal("mayManage: a lead of another org with the same name manages the job")
	}
}

func TestLoopbackRule(t *testing.T) {
	tests := []struct {
		grpc, admin string
		insecure    bool
		ok          bool
	}{
		{"127.0.0.1:1", "127.0.0.1:2", false, true},
		{"[::1]:1", "localhost:2", false, true},
		{"0.0.0.0:1", "127.0.0.1:2", false, false},
		{"127.0.0.1:1", "10.0.0.1:2", false, false},
		{"0.0.0.0:1", "0.0.0.0:2", true, true},
	}
	for _, tt := range tests {
		c := Config{GRPCListen: tt.grpc, AdminListen: tt.admin, Insecure: tt.insecure}
		if err := c.checkLoopback(); (err == nil) != tt.ok {
			t.Errorf("%s %s insecure=%v: got %v, want ok=%v", tt.grpc, tt.admin, tt.insecure, err, tt.ok)
		}
	}
}

func TestRequestSizeCaps(t *testing.T) {
	c := mustServeBufconn(t, mustNew(t, testCfg(t, newFakeClock())))
	req := shard("site-a", 1, []string{"28", "28"}, []string{"1"})
	req.ShardInfo.ShardDescription = strings.Repeat("x", maxUnaryRequest+1)
	_, err := c.dir.UpdateShardInfo(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: got %v, want ResourceExhausted", err)
	}
	if _, err := c.dir.GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{}); err != nil {
		t.Fatalf("after an oversized request: %v", err)
	}
}
