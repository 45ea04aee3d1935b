package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// TestDownloadJobZipOffset: the results zip of a job is the same bytes
// each time it is made, and a request with an offset and the zip's sha256
// gets the rest of it; one for another zip gets all of it.
func TestDownloadJobZipOffset(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{})
	reply := submit(t, c, zipOf(t, writeJobDir(t, testManifest)))
	id, _ := reply.Meta[api.MetaJobID].(string)

	get := func(t *testing.T, meta map[string]any) (*adminproto.Message, []byte) {
		t.Helper()
		req := adminproto.NewRequest(api.CmdDownloadJobZip + " " + id)
		for k, v := range meta {
			req.Meta[k] = v
		}
		var body bytes.Buffer
		m, err := c.Download(ctx, req, 1<<30, &body)
		if err != nil {
			t.Fatal(err)
		}
		return m, body.Bytes()
	}
	m, whole := get(t, nil)
	sum := sha256.Sum256(whole)
	hexSum := hex.EncodeToString(sum[:])
	if m.Meta[api.MetaSHA256] != hexSum || m.Meta[api.MetaSize] != float64(len(whole)) || m.Meta[api.MetaOffset] != float64(0) {
		t.Fatalf("reply meta %v, want sha256 %s, size %d, offset 0", m.Meta, hexSum, len(whole))
	}
	size := len(whole)
	tests := []struct {
		name       string
		meta       map[string]any
		wantOffset int
		wantStatus string
	}{
		{name: "again, the same zip", meta: nil, wantOffset: 0},
		{name: "from the middle", meta: map[string]any{api.MetaOffset: size / 2, api.MetaSHA256: hexSum}, wantOffset: size / 2},
		{name: "nothing left", meta: map[string]any{api.MetaOffset: size, api.MetaSHA256: hexSum}, wantOffset: size},
		{name: "another zip's offset", meta: map[string]any{api.MetaOffset: size / 2, api.MetaSHA256: "00"}, wantOffset: 0},
		{name: "negative", meta: map[string]any{api.MetaOffset: -1, api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
		{name: "past the end", meta: map[string]any{api.MetaOffset: size + 1, api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
		{name: "not a number", meta: map[string]any{api.MetaOffset: "10", api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, body := get(t, tt.meta)
			if tt.wantStatus != "" {
				if m.Status() != tt.wantStatus {
					t.Fatalf("status %s (%q), want %s", m.Status(), m.Info(), tt.wantStatus)
				}
				return
			}
			if m.Status() != adminproto.StatusOK {
				t.Fatalf("status %s (%q)", m.Status(), m.Info())
			}
			if got := m.Meta[api.MetaOffset]; got != float64(tt.wantOffset) {
				t.Errorf("reply offset %v, want %d", got, tt.wantOffset)
			}
			if !bytes.Equal(body, whole[tt.wantOffset:]) {
				t.Errorf("got %d bytes, want the zip's last %d", len(body), size-tt.wantOffset)
			}
		})
	}
}
