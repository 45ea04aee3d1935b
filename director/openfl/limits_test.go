package openfl

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
)

func TestRequestSizeCaps(t *testing.T) {
	c := mustServeBufconn(t, mustNew(t, testCfg(t, newFakeClock())))
	req := shard("site-a", 1, []string{"28", "28"}, []string{"1"})
	req.ShardInfo.ShardDescription = strings.Repeat("x", maxUnaryRequest+1)
	_, err := c.dir.UpdateShardInfo(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: got %v, want ResourceExhausted", err)
	}
	if _, err := c.dir.GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{}); err != nil {
		t.Fatalf("after an oversized request: %v", err)
	}
}

// hugeMessage is a message of n MiB, every MiB the same buffer, so that
// sending it allocates one MiB on the client's side.
type hugeMessage struct {
	mib   []byte
	count int
}

// hugeCodec sends a hugeMessage without copying it.
type hugeCodec struct{}

func (hugeCodec) Marshal(v any) (mem.BufferSlice, error) {
	m := v.(*hugeMessage)
	out := make(mem.BufferSlice, m.count)
	for i := range out {
		out[i] = mem.SliceBuffer(m.mib)
	}
	return out, nil
}
func (hugeCodec) Unmarshal(mem.BufferSlice, any) error { return nil }
func (hugeCodec) Name() string                         { return "proto" }

var _ encoding.CodecV2 = hugeCodec{}

// TestHugeMessagesRefusedBeforeRead sends 256 MiB to methods that take
// small messages and checks that the director refuses each by its length
// prefix: what the process allocates meanwhile stays far below what one
// message would cost.
func TestHugeMessagesRefusedBeforeRead(t *testing.T) {
	conn := mustDial(t, mustServe(t, mustNew(t, testCfg(t, newFakeClock()))))
	const size = 256 << 20
	msg := &hugeMessage{mib: make([]byte, 1<<20), count: size >> 20}
	for i := range msg.mib {
		msg.mib[i] = 0xff // a field key of no field: garbage if ever parsed
	}
	tests := []struct {
		method string
		stream bool
	}{
		{directorpb.Director_UpdateEnvoyStatus_FullMethodName, false},
		{directorpb.Director_UpdateShardInfo_FullMethodName, false},
		{aggregatorpb.Aggregator_GetTasks_FullMethodName, false},
		{aggregatorpb.Aggregator_SendLocalTaskResults_FullMethodName, true},
		{directorpb.Director_GetExperimentData_FullMethodName, true},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var err error
			if tt.stream {
				desc := &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}
				var s grpc.ClientStream
				s, err = conn.NewStream(context.Background(), desc, tt.method, grpc.ForceCodecV2(hugeCodec{}))
				if err == nil {
					if err = s.SendMsg(msg); err == nil {
						s.CloseSend()
					}
					var out hugeMessage
					err = s.RecvMsg(&out)
				}
			} else {
				var out hugeMessage
				err = conn.Invoke(context.Background(), tt.method, msg, &out, grpc.ForceCodecV2(hugeCodec{}), grpc.MaxCallSendMsgSize(size+1))
			}
			runtime.ReadMemStats(&after)
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("got %v, want ResourceExhausted", err)
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
				t.Fatalf("allocated %d MiB while refusing a %d MiB message, want under 32 MiB", grew>>20, size>>20)
			}
		})
	}
	if _, err := directorpb.NewDirectorClient(conn).GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{}); err != nil {
		t.Fatalf("after huge requests: %v", err)
	}
}
