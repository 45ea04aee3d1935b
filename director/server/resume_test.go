package server

import (
	"bytes"
	"context"
	"io"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// fetchArchive reads GetExperimentData's stream whole, with the offset
// header when offset is not "", and returns its header and the bytes.
func fetchArchive(ctx context.Context, c directorpb.DirectorClient, id, envoy, offset string) (metadata.MD, []byte, error) {
	if offset != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, api.MDOffset, offset)
	}
	stream, err := c.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: envoy})
	if err != nil {
		return nil, nil, err
	}
	var b bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		b.Write(chunk.GetNpbytes())
	}
	md, err := stream.Header()
	return md, b.Bytes(), err
}

func TestGetExperimentDataOffset(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a")
	id := f.submitJob(t, `{"name": "resume", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`)
	if got := f.waitFor(t, "site-a"); got != id {
		t.Fatalf("WaitExperiment: got %q, want %q", got, id)
	}
	md, whole, err := fetchArchive(ctx, f.c.dir, id, "site-a", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Get(api.MDOffset); got != nil {
		t.Errorf("a fetch without offset got %s %v, want none (as OpenFL envoys see)", api.MDOffset, got)
	}
	size := len(whole)
	for _, tt := range []struct {
		name   string
		offset int
	}{
		{"from the start", 0},
		{"from one byte", 1},
		{"from the middle", size / 2},
		{"nothing left", size},
	} {
		t.Run(tt.name, func(t *testing.T) {
			md, got, err := fetchArchive(ctx, f.c.dir, id, "site-a", strconv.Itoa(tt.offset))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, whole[tt.offset:]) {
				t.Errorf("got %d bytes, want the archive's last %d", len(got), size-tt.offset)
			}
			if echo := md.Get(api.MDOffset); len(echo) != 1 || echo[0] != strconv.Itoa(tt.offset) {
				t.Errorf("%s echo %v, want [%d]", api.MDOffset, echo, tt.offset)
			}
			if got := md.Get(api.MDArchiveSize); len(got) != 1 || got[0] != strconv.Itoa(size) {
				t.Errorf("%s %v, want the whole archive's %d", api.MDArchiveSize, got, size)
			}
		})
	}
	for _, bad := range []string{"-1", strconv.Itoa(size + 1), "x", "1e3"} {
		t.Run("refuses "+bad, func(t *testing.T) {
			_, _, err := fetchArchive(ctx, f.c.dir, id, "site-a", bad)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("got %v, want InvalidArgument", err)
			}
		})
	}
}
