package director

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/store/blob"
)

// testBlobStore opens the store of kind ("file" or "s3") for a director
// on dataDir. The S3 store is a fresh folder of FEDPLANE_TEST_S3's bucket;
// without it the test is skipped, and fails under CI=true.
func testBlobStore(tb testing.TB, kind, dataDir string) blob.Store {
	tb.Helper()
	url := ""
	if kind == "s3" {
		u := os.Getenv("FEDPLANE_TEST_S3")
		if u == "" {
			if os.Getenv("CI") == "true" {
				tb.Fatal("FEDPLANE_TEST_S3 is unset under CI=true: .ci/run starts an S3 server (.ci/s3.sh) and exports it")
			}
			tb.Skip("FEDPLANE_TEST_S3 is unset: no S3 server to test against (.ci/s3.sh starts one)")
		}
		b := make([]byte, 6)
		rand.Read(b)
		url = fmt.Sprintf("%s/director-%x", strings.TrimSuffix(u, "/"), b)
	}
	s, err := blob.Open(context.Background(), url, blob.Options{DataDir: dataDir})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// TestReconcileOrphans starts a director on a store holding a blob no row
// names, as a crash between a commit and its row leaves: a file store's
// is removed at once; a shared bucket's only once it is older than
// orphanGrace, since another director may be about to record it.
func TestReconcileOrphans(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		kind      string
		keptFirst bool
	}{{"file", false}, {"s3", true}} {
		t.Run(tt.kind, func(t *testing.T) {
			clock := newFakeClock()
			clock.t = time.Now()
			cfg := testCfg(t, clock)
			cfg.Blobs = testBlobStore(t, tt.kind, cfg.DataDir)
			const orphan = "experiments/ghost/models/round-0001.safetensors"
			tmp, err := cfg.Blobs.Create("model-*")
			if err != nil {
				t.Fatal(err)
			}
			tmp.WriteString("not named by any row")
			if err := cfg.Blobs.Commit(ctx, tmp, orphan); err != nil {
				t.Fatal(err)
			}
			start := func() {
				d, err := New(ctx, cfg)
				if err != nil {
					t.Fatal(err)
				}
				d.Close()
			}
			start()
			_, err = cfg.Blobs.Stat(ctx, orphan)
			if kept := err == nil; kept != tt.keptFirst {
				t.Fatalf("after a start: orphan kept %v (%v), want %v", kept, err, tt.keptFirst)
			}
			clock.Add(orphanGrace + time.Minute)
			start()
			if _, err := cfg.Blobs.Stat(ctx, orphan); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("after a start past the grace: got %v, want the orphan removed", err)
			}
		})
	}
}
