package envoy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/tensor"
)

// cutResults takes task results as fedplane's director does with
// api.MDUploadID: its first stream breaks off with Unavailable once cutAt
// bytes arrived, as a dropped connection does; ResultsOffset tells what it
// holds (unless noTransfers: a director without the service); the next
// stream appends from the offset it names. It records every attempt.
type cutResults struct {
	cutAt       int
	noTransfers bool
	// drop, if set, cuts the first stream off instead of its Unavailable,
	// as a replica killed mid-upload does; it returns the stream's end.
	drop func(context.Context) error

	mu       sync.Mutex
	held     []byte
	ids      []string
	offsets  []string
	size     string
	sum      string
	received []int // bytes per attempt
}

func (c *cutResults) serve(stream grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	c.mu.Lock()
	attempt := len(c.received)
	c.ids = append(c.ids, md.Get(api.MDUploadID)...)
	c.offsets = append(c.offsets, md.Get(api.MDOffset)...)
	c.size, c.sum = md.Get(api.MDSize)[0], md.Get(api.MDSHA256)[0]
	c.received = append(c.received, 0)
	off, _ := strconv.Atoi(md.Get(api.MDOffset)[0])
	if off != len(c.held) && !c.noTransfers {
		c.mu.Unlock()
		return status.Errorf(codes.FailedPrecondition, "offset %d, held %d", off, len(c.held))
	}
	if off == 0 {
		c.held = nil
	}
	c.mu.Unlock()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&aggregatorpb.SendLocalTaskResultsResponse{})
		}
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.held = append(c.held, m.GetNpbytes()...)
		c.received[attempt] += len(m.GetNpbytes())
		cut := attempt == 0 && len(c.held) >= c.cutAt
		c.mu.Unlock()
		if cut && c.drop != nil {
			return c.drop(stream.Context())
		}
		if cut {
			return status.Error(codes.Unavailable, "connection dropped")
		}
	}
}

func (c *cutResults) offset(_ context.Context, req *transferspb.ResultsOffsetRequest) (*transferspb.ResultsOffsetResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.GetUploadId() != c.ids[0] {
		return nil, status.Error(codes.NotFound, "no such upload")
	}
	return &transferspb.ResultsOffsetResponse{Offset: int64(len(c.held))}, nil
}

func TestSendResultsResumesACut(t *testing.T) {
	var model bytes.Buffer
	w := make([]float32, 1<<20) // 4 MiB: more than one chunk
	for i := range w {
		w[i] = float32(i)
	}
	if err := tensor.WriteFloat32Safetensors(&model, map[string][]float32{"w": w}, map[string][]int64{"w": {1 << 20}}); err != nil {
		t.Fatal(err)
	}
	trained, _, err := tensor.ReadSafetensors(bytes.NewReader(model.Bytes()), int64(model.Len()))
	if err != nil {
		t.Fatal(err)
	}
	h := tensor.TaskResultsHeader{Sender: "site-1", Receiver: directorName, FederationUUID: "exp-1", Round: 3, TaskName: taskTrain, DataSize: 10}
	var want bytes.Buffer
	if _, err := tensor.WriteTaskResults(&want, h, trained, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		cutAt       int
		noTransfers bool
		wantOffset  int // of the second attempt; -1: what the first delivered
	}{
		{name: "resumes from the bytes held", cutAt: want.Len() / 2, wantOffset: -1},
		{name: "cut after the last byte: an empty stream completes it", cutAt: want.Len(), wantOffset: want.Len()},
		{name: "a director without ResultsOffset gets it all again", cutAt: want.Len() / 2, noTransfers: true, wantOffset: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &cutResults{cutAt: tt.cutAt, noTransfers: tt.noTransfers}
			f := &fakeDirector{sendLocalTaskResults: c.serve}
			if !tt.noTransfers {
				f.resultsOffset = c.offset
			}
			e := mustEnvoy(t, f, 10)
			mustConnect(t, e)
			x := &experiment{id: "exp-1", dir: filepath.Join(e.cfg.WorkDir, "exp-1"), log: e.log}
			if err := os.MkdirAll(x.dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := e.sendResults(context.Background(), x, h, trained, nil); err != nil {
				t.Fatalf("sendResults: %v", err)
			}
			if !bytes.Equal(c.held, want.Bytes()) {
				t.Fatalf("director holds %d bytes, not the %d serialized", len(c.held), want.Len())
			}
			if len(c.ids) != 2 || c.ids[0] != c.ids[1] || len(c.ids[0]) != 32 {
				t.Errorf("upload ids %q: want one of 32 hex digits, twice", c.ids)
			}
			held := c.received[0]
			wantOffset := held
			if tt.wantOffset >= 0 {
				wantOffset = tt.wantOffset
			}
			if len(c.offsets) != 2 || c.offsets[0] != "0" || c.offsets[1] != strconv.Itoa(wantOffset) {
				t.Errorf("offsets %q: want 0 then %d", c.offsets, wantOffset)
			}
			if c.received[1] != want.Len()-wantOffset {
				t.Errorf("second attempt sent %d bytes, want %d", c.received[1], want.Len()-wantOffset)
			}
			if c.size != strconv.Itoa(want.Len()) || c.sum != sha256Hex(want.Bytes()) {
				t.Errorf("announced %s bytes of sha256 %s, want %d of %s", c.size, c.sum, want.Len(), sha256Hex(want.Bytes()))
			}
			if left, _ := filepath.Glob(filepath.Join(x.dir, "results-*")); len(left) != 0 {
				t.Errorf("temp results left: %v", left)
			}
		})
	}
}
