package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestSubmitSignedJob submits over mutual TLS with signatures good and bad:
// the director keeps a signature that is the caller's own and signs the
// archive received, and refuses every other before it stores anything.
func TestSubmitSignedJob(t *testing.T) {
	p := pkitest.New(t)
	other := pkitest.New(t)
	p.Admin("alice", pki.RoleLead)
	p.Admin("bob", pki.RoleLead)
	other.Admin("alice", pki.RoleLead)
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{TLS: p.ServerTLS()})
	cfg := p.ClientTLS("alice")
	cfg.NextProtos = []string{adminproto.ALPN}
	dialer := &tls.Dialer{Config: cfg}
	c.Dial = dialer.DialContext

	archive := zipOf(t, writeJobDir(t, testManifest))
	otherArchive := zipWithManifest(t, strings.Replace(testManifest, `"rounds": 2`, `"rounds": 3`, 1))
	sign := func(pp *pkitest.PKI, name string, b []byte) json.RawMessage { return pp.SignJob(name, b).Marshal() }
	tests := []struct {
		name       string
		sig        any
		wantStatus string
		wantInfo   string
	}{
		{name: "unsigned", wantStatus: adminproto.StatusOK},
		{name: "own signature", sig: sign(p, "alice", archive), wantStatus: adminproto.StatusOK},
		{name: "another admin's signature", sig: sign(p, "bob", archive), wantStatus: adminproto.StatusNotAuthorized, wantInfo: "signed by bob, not by the caller alice"},
		{name: "another CA", sig: sign(other, "alice", archive), wantStatus: adminproto.StatusInvalidJobDef, wantInfo: "not from this site's CA"},
		{name: "another archive", sig: sign(p, "alice", otherArchive), wantStatus: adminproto.StatusInvalidJobDef, wantInfo: "did a file of the job change"},
		{name: "garbage", sig: map[string]any{"version": 7}, wantStatus: adminproto.StatusInvalidJobDef, wantInfo: "version 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := adminproto.NewRequest(api.CmdSubmitJob)
			if tt.sig != nil {
				req.Meta = map[string]any{api.MetaSignature: tt.sig}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			reply, err := c.Upload(ctx, req, uint64(len(archive)), bytes.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			if st := reply.Status(); st != tt.wantStatus || !strings.Contains(reply.Info(), tt.wantInfo) {
				t.Fatalf("status %q %q, want %q saying %q", st, reply.Info(), tt.wantStatus, tt.wantInfo)
			}
		})
	}
}
