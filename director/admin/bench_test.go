package admin

import (
	"context"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/pki"
)

// BenchmarkAdminListEnvoys is the director's side of `make bench` figure 6:
// the list_envoys reply for 10,000 envoys, built and written as the admin
// port sends it.
func BenchmarkAdminListEnvoys(b *testing.B) {
	s := New(directortest.WithEnvoys(b, 10_000), Config{})
	req := &request{name: api.CmdListEnvoys, caller: director.Caller{Name: "admin", Role: pki.RoleProjectAdmin}}
	var size int64
	b.ReportAllocs()
	for b.Loop() {
		reply, err := s.listEnvoys(context.Background(), req)
		if err != nil {
			b.Fatal(err)
		}
		cw := &countWriter{}
		if err := adminproto.WriteMessage(cw, reply); err != nil {
			b.Fatal(err)
		}
		size = cw.n
	}
	b.ReportMetric(float64(size), "reply-bytes")
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
