package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// testBucket is the S3 bucket of FEDPLANE_TEST_S3 (s3://bucket/prefix,
// with the endpoint and credentials in AWS_ENDPOINT_URL_S3,
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, as .ci/s3.sh exports
// them), and a client of it. The test is skipped without it, and fails
// under CI=true.
func testBucket(tb testing.TB) (client *minio.Client, bucket, prefix string) {
	tb.Helper()
	raw := os.Getenv("FEDPLANE_TEST_S3")
	if raw == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("FEDPLANE_TEST_S3 is unset under CI=true: .ci/run starts an S3 server (.ci/s3.sh) and exports it")
		}
		tb.Skip("FEDPLANE_TEST_S3 is unset: no S3 server to test against (.ci/s3.sh starts one)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" {
		tb.Fatalf("FEDPLANE_TEST_S3=%q: want s3://bucket/prefix", raw)
	}
	ep, err := url.Parse(os.Getenv("AWS_ENDPOINT_URL_S3"))
	if err != nil || ep.Host == "" {
		tb.Fatalf("AWS_ENDPOINT_URL_S3=%q: want http://host:port", os.Getenv("AWS_ENDPOINT_URL_S3"))
	}
	client, err = minio.New(ep.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), ""),
		Secure: ep.Scheme == "https", Region: os.Getenv("AWS_REGION"),
	})
	if err != nil {
		tb.Fatal(err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	return client, u.Host, strings.Trim(u.Path, "/") + fmt.Sprintf("/e2e-%x", b)
}

// objects lists the keys under prefix/folder, relative to prefix.
func objects(tb testing.TB, c *minio.Client, bucket, prefix, folder string) []string {
	tb.Helper()
	var keys []string
	for o := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix + "/" + folder + "/", Recursive: true}) {
		if o.Err != nil {
			tb.Fatalf("list %s/%s: %v", prefix, folder, o.Err)
		}
		keys = append(keys, strings.TrimPrefix(o.Key, prefix+"/"))
	}
	slices.Sort(keys)
	return keys
}

// TestS3BlobStore runs a director with --blob-store s3://... through a
// two-round job on two envoys: the archive and every round's model are
// objects of the bucket and nothing is stored under the data dir but the
// database and the read cache; the results download is the model of the
// bucket, also after a restart with the cache emptied; deleting the job
// removes its objects.
func TestS3BlobStore(t *testing.T) {
	client, bucket, prefix := testBucket(t)
	dataDir := t.TempDir()
	store := fmt.Sprintf("s3://%s/%s", bucket, prefix)
	d := startDirectorAdmin(t, dataDir, append(fastDirector, "--blob-store", store)...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 3, 30))
	waitOnline(t, d, "site-a", "site-b")

	dir := trainJob(t, "s3", `"min_envoys": 2`, 2, "ok", "1m")
	manifest := `{"name": "s3", "min_envoys": 2, "rounds": 2, "keep_models": "all",
		"train": {"command": ["python3", "train.py", "ok"], "timeout": "1m"}}`
	os.WriteFile(filepath.Join(dir, "job.json"), []byte(manifest), 0o644)
	id := submitJob(t, d, dir)
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}

	exp := "experiments/" + id
	want := []string{exp + "/archive.zip", exp + "/models/round-0000.safetensors",
		exp + "/models/round-0001.safetensors", exp + "/models/round-0002.safetensors"}
	if got := objects(t, client, bucket, prefix, exp); !slices.Equal(got, want) {
		// The reports of each round are removed once it is aggregated.
		t.Fatalf("bucket holds %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "experiments")); !os.IsNotExist(err) {
		t.Fatalf("the data dir has an experiments/ folder (%v): files went to disk, not the bucket", err)
	}

	stored := getObject(t, client, bucket, prefix+"/"+exp+"/models/round-0002.safetensors")
	mean := float32(1.0*10+3*30) / 40
	check := func(what string) {
		t.Helper()
		out := t.TempDir()
		mustFladmin(t, d.admin, "download-job", id, "-d", out)
		path := filepath.Join(out, id, "models", "last.safetensors")
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(got, stored) {
			t.Fatalf("%s: last.safetensors (%d bytes) is not the bucket's round-0002 model (%d bytes)", what, len(got), len(stored))
		}
		last := readSafetensorsFile(t, path)
		for i, v := range []float32{1, 2, 3, 4} {
			if w := v + 2*mean; abs(last["w"][i]-w) > 1e-4 {
				t.Fatalf("%s: w[%d]: got %v, want start + 2 × %v = %v", what, i, last["w"][i], mean, w)
			}
		}
	}
	check("download")

	// A restart with the cache emptied reads the models from the bucket.
	if _, err := d.proc.Stop(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dataDir, "blob-cache")); err != nil {
		t.Fatal(err)
	}
	d = restartDirector(t, d, append(fastDirector, "--blob-store", store)...)
	check("download after a restart with an empty cache")

	mustFladmin(t, d.admin, "delete-job", id)
	if got := objects(t, client, bucket, prefix, exp); len(got) != 0 {
		t.Fatalf("after delete-job the bucket still holds %v", got)
	}
}

func getObject(tb testing.TB, c *minio.Client, bucket, key string) []byte {
	tb.Helper()
	o, err := c.GetObject(context.Background(), bucket, key, minio.GetObjectOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		tb.Fatalf("get %s: %v", key, err)
	}
	return b
}
