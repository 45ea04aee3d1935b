package envoy

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
)

func TestArchiveLimits(t *testing.T) {
	d := job.DefaultLimits()
	tests := []struct {
		name string
		md   metadata.MD
		own  job.Limits
		want job.Limits
	}{
		{name: "no headers, no flags", want: d},
		{name: "director lower", md: metadata.Pairs(api.MDMaxUnpacked, "1000", api.MDMaxEntries, "10", api.MDMaxRatio, "5", api.MDMaxArchiveRatio, "4"),
			want: job.Limits{MaxUnpacked: 1000, MaxFiles: 10, MaxRatio: 5, MaxArchiveRatio: 4}},
		{name: "own lower", md: metadata.Pairs(api.MDMaxUnpacked, "1000", api.MDMaxEntries, "10"), own: job.Limits{MaxUnpacked: 10, MaxFiles: 3},
			want: job.Limits{MaxUnpacked: 10, MaxFiles: 3, MaxRatio: d.MaxRatio, MaxArchiveRatio: d.MaxArchiveRatio}},
		{name: "director cannot raise", md: metadata.Pairs(api.MDMaxUnpacked, "99999999999999", api.MDMaxEntries, "99999999"), want: d},
		{name: "own raised, director silent", own: job.Limits{MaxUnpacked: 1 << 40},
			want: job.Limits{MaxUnpacked: 1 << 40, MaxFiles: d.MaxFiles, MaxRatio: d.MaxRatio, MaxArchiveRatio: d.MaxArchiveRatio}},
		{name: "garbage ignored", md: metadata.Pairs(api.MDMaxUnpacked, "-1", api.MDMaxEntries, "x", api.MDMaxRatio, "0"), want: d},
		{name: "repeated ignored", md: metadata.MD{api.MDMaxEntries: {"1", "2"}}, want: d},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := archiveLimits(tt.md, tt.own); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestArchiveTooLargeForTheSite: an archive announced larger than the site
// could ever unpack is refused before a byte of it is written.
func TestArchiveTooLargeForTheSite(t *testing.T) {
	filler := make([]byte, 96<<10)
	rand.Read(filler)
	archive := mustJob(t, []string{"true"}, map[string]string{"filler": base64.StdEncoding.EncodeToString(filler)})
	fl := newFlow(t, archive)
	e := mustEnvoy(t, fl.fakeDirector, 10)
	e.cfg.ArchiveLimits = job.Limits{MaxUnpacked: 1, MaxFiles: 1}
	startRun(t, e)
	fl.finished(t)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.failed.GetErrorCode() != api.CodeSiteRefused || !strings.Contains(fl.failed.GetErrorDescription(), "more than this site accepts") {
		t.Fatalf("failure %v", fl.failed)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.WorkDir, testID, archiveName+tmpSuffix)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused archive was written: %v", err)
	}
}
