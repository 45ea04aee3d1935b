package envoy

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// cutDirector serves an archive as fedplane's director does, honouring
// api.MDOffset unless ignoreOffset, and breaks the first stream off after
// cutAt bytes with Unavailable, as a dropped connection does. It records
// the offsets asked for and the bytes sent.
type cutDirector struct {
	archive      []byte
	cutAt        int
	ignoreOffset bool
	// between runs before the second stream, as whatever may happen to
	// the envoy's disk between attempts.
	between func()
	// drop, if set, cuts the first stream off instead of its Unavailable,
	// as a replica killed mid-stream does; it returns the stream's end.
	drop func(context.Context) error

	mu      sync.Mutex
	calls   int
	offsets []string
	sent    int
}

func (c *cutDirector) serve(_ *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
	c.mu.Lock()
	c.calls++
	call := c.calls
	md, _ := metadata.FromIncomingContext(stream.Context())
	asked := strings.Join(md.Get(api.MDOffset), ",")
	c.offsets = append(c.offsets, asked)
	c.mu.Unlock()
	if call == 2 && c.between != nil {
		c.between()
	}
	hdr := metadata.Pairs(api.MDArchiveSize, itoa(int64(len(c.archive))), api.MDArchiveSHA256, sha256Hex(c.archive))
	from := 0
	if asked != "" && !c.ignoreOffset {
		n, err := strconv.Atoi(asked)
		if err != nil || n < 0 || n > len(c.archive) {
			return status.Errorf(codes.InvalidArgument, "bad offset %q", asked)
		}
		from = n
		hdr.Set(api.MDOffset, asked)
	}
	if err := stream.SendHeader(hdr); err != nil {
		return err
	}
	end := len(c.archive)
	if call == 1 {
		end = c.cutAt
	}
	for _, ch := range chunked(c.archive[from:end], 100) {
		if err := stream.Send(ch); err != nil {
			return err
		}
		c.mu.Lock()
		c.sent += len(ch.GetNpbytes())
		c.mu.Unlock()
	}
	if call == 1 {
		if c.drop != nil {
			return c.drop(stream.Context())
		}
		return status.Error(codes.Unavailable, "connection dropped")
	}
	return nil
}

func TestFetchResumesACutTransfer(t *testing.T) {
	archive := mustJob(t, []string{"true"}, map[string]string{"pad.txt": strings.Repeat("resumable ", 2000)})
	half := len(archive) / 2
	half -= half % 100 // on a chunk boundary, as the stream arrived
	tests := []struct {
		name         string
		ignoreOffset bool
		corrupt      bool
		wantOffset   string // asked for on the second attempt
		wantSent     int
		wantErr      string
	}{
		{name: "resumes from the bytes held", wantOffset: strconv.Itoa(half), wantSent: len(archive)},
		{name: "a director that ignores the offset sends it all", ignoreOffset: true, wantOffset: strconv.Itoa(half), wantSent: half + len(archive)},
		{name: "held bytes changed on disk fail the digest", corrupt: true, wantOffset: strconv.Itoa(half), wantSent: len(archive), wantErr: "broken archive: its sha256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &cutDirector{archive: archive, cutAt: half, ignoreOffset: tt.ignoreOffset}
			f := &fakeDirector{getExperimentData: c.serve}
			e := mustEnvoy(t, f, 10)
			mustConnect(t, e)
			x := &experiment{id: "exp-1", dir: filepath.Join(e.cfg.WorkDir, "exp-1"), log: e.log}
			if err := os.MkdirAll(x.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(x.dir, archiveName+tmpSuffix)
			if tt.corrupt {
				c.between = func() {
					b, err := os.ReadFile(tmp)
					if err != nil || len(b) != half {
						t.Errorf("partial archive: %d bytes, %v; want %d", len(b), err, half)
						return
					}
					b[0] ^= 0xff
					os.WriteFile(tmp, b, 0o600)
				}
			}
			_, err := e.fetch(context.Background(), x)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("fetch: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("fetch: got %v, want %q", err, tt.wantErr)
			}
			if len(c.offsets) != 2 || c.offsets[0] != "" || c.offsets[1] != tt.wantOffset {
				t.Errorf("offsets asked %q, want none then %q", c.offsets, tt.wantOffset)
			}
			if c.sent != tt.wantSent {
				t.Errorf("director sent %d bytes, want %d", c.sent, tt.wantSent)
			}
			if tt.wantErr != "" {
				if _, err := os.Stat(tmp); !os.IsNotExist(err) {
					t.Errorf("partial archive left after a failed fetch (%v)", err)
				}
				return
			}
			got, err := os.ReadFile(filepath.Join(x.dir, archiveName))
			if err != nil || string(got) != string(archive) {
				t.Errorf("archive on disk: %d bytes, %v; want the %d sent", len(got), err, len(archive))
			}
		})
	}
}
