package envoy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/job"
)

func TestFetch(t *testing.T) {
	archive := mustJob(t, []string{"./train.sh"}, map[string]string{"train.sh": "#!/bin/sh\nexit 0\n"})
	size, sum := int64(len(archive)), sha256Hex(archive)
	other := sha256Hex([]byte("something else"))
	broken := chunked(archive, 100)
	broken[1] = &directorpb.ExperimentData{Size: 100, Npbytes: broken[1].Npbytes[:99]}

	tests := []struct {
		name    string
		serve   func(*directorpb.GetExperimentDataRequest, grpc.ServerStreamingServer[directorpb.ExperimentData]) error
		wantErr string
		// wantCode is the gRPC code of a director error; OK means the
		// error is the envoy's own, to be reported as a failure.
		wantCode codes.Code
	}{
		{name: "good archive", serve: serveArchive(size, sum, chunked(archive, 100))},
		{name: "one chunk", serve: serveArchive(size, strings.ToUpper(sum), chunked(archive, len(archive)))},
		{name: "chunk with a wrong size", serve: serveArchive(size, sum, broken), wantErr: "broken archive: chunk 2 has size 100 but 99 bytes"},
		{name: "sha256 mismatch", serve: serveArchive(size, other, chunked(archive, 100)), wantErr: "broken archive: its sha256 is " + sum + ", the director announced " + other},
		{name: "shorter than announced", serve: serveArchive(size+1, sum, chunked(archive, 100)), wantErr: "broken archive: received " + itoa(size) + " bytes, the director announced " + itoa(size+1)},
		{name: "longer than announced", serve: serveArchive(size-1, sum, chunked(archive, 100)), wantErr: "broken archive: more than the " + itoa(size-1) + " bytes the director announced"},
		{name: "no header", serve: func(_ *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
			return stream.Send(&directorpb.ExperimentData{Size: 1, Npbytes: []byte{1}})
		}, wantErr: "broken archive: the director sent 0 fedplane-archive-size and 0 fedplane-archive-sha256 headers"},
		{name: "bad size header", serve: serveArchive(-1, sum, nil), wantErr: `fedplane-archive-size "-1" is not a size`},
		{name: "bad sha256 header", serve: serveArchive(size, "abc", nil), wantErr: `fedplane-archive-sha256 "abc" is not a sha256`},
		{name: "not a zip", serve: serveArchive(5, sha256Hex([]byte("hello")), chunked([]byte("hello"), 2)), wantErr: "job archive: not a zip file"},
		{name: "director error", serve: func(*directorpb.GetExperimentDataRequest, grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
			return status.Error(codes.NotFound, "no running experiment")
		}, wantErr: "no running experiment", wantCode: codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDirector{getExperimentData: tt.serve}
			e := mustEnvoy(t, f, 10)
			mustConnect(t, e)
			x := &experiment{id: "0c5a4a4e-8f0b-4a55-9a0e-5d1f5d3b8c11", log: e.log}
			x.dir = filepath.Join(e.cfg.WorkDir, x.id)
			if err := os.MkdirAll(x.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			got, err := e.fetch(context.Background(), x)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				switch {
				case tt.wantCode == codes.OK && isStatus(err):
					t.Errorf("error %v is a gRPC status, want an error of the envoy's own", err)
				case tt.wantCode != codes.OK && status.Code(err) != tt.wantCode:
					t.Errorf("error %v: gRPC code %v, want %v", err, status.Code(err), tt.wantCode)
				}
				for _, name := range []string{archiveName, archiveName + tmpSuffix} {
					if _, err := os.Stat(filepath.Join(x.dir, name)); tt.name != "not a zip" && !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s is left after a failed download (%v)", name, err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if got.manifest.Name != "test job" || got.dir != filepath.Join(x.dir, jobDirName) {
				t.Errorf("got job %q in %s", got.manifest.Name, got.dir)
			}
			for _, name := range []string{job.ManifestFile, job.ModelFile, "train.sh"} {
				if _, err := os.Stat(filepath.Join(got.dir, name)); err != nil {
					t.Errorf("unpacked job: %v", err)
				}
			}
			if b, err := os.ReadFile(filepath.Join(x.dir, archiveName)); err != nil || string(b) != string(archive) {
				t.Errorf("archive.zip: %d bytes, %v; want the archive", len(b), err)
			}
			if _, err := os.Stat(filepath.Join(x.dir, archiveName+tmpSuffix)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temporary archive left behind (%v)", err)
			}

			// A second fetch replaces the stale job folder.
			if err := os.WriteFile(filepath.Join(got.dir, "stale"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := e.fetch(context.Background(), x); err != nil {
				t.Fatalf("fetch again: %v", err)
			}
			if _, err := os.Stat(filepath.Join(got.dir, "stale")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("stale file survived a second fetch (%v)", err)
			}
		})
	}
}

func TestFetchRetriesUnavailable(t *testing.T) {
	archive := mustJob(t, []string{"true"}, nil)
	good := serveArchive(int64(len(archive)), sha256Hex(archive), chunked(archive, 100))
	f := &fakeDirector{}
	f.getExperimentData = func(req *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
		if f.called("GetExperimentData") < 3 {
			return status.Error(codes.Unavailable, "director is stopping")
		}
		return good(req, stream)
	}
	e := mustEnvoy(t, f, 10)
	mustConnect(t, e)
	x := &experiment{id: "exp-1", dir: filepath.Join(e.cfg.WorkDir, "exp-1"), log: e.log}
	if err := os.MkdirAll(x.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := e.fetch(context.Background(), x); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if n := f.called("GetExperimentData"); n != 3 {
		t.Errorf("GetExperimentData called %d times, want 3", n)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
