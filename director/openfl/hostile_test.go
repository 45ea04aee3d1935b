package openfl

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
)

// rawCodec sends bytes as they are, to put malformed protobufs on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

func TestMalformedProtobufs(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	conn := mustDial(t, mustServe(t, d))
	tests := []struct {
		name   string
		method string
		body   []byte
	}{
		{"truncated length", directorpb.Director_UpdateShardInfo_FullMethodName, []byte{0x0a, 0xff, 0xff, 0xff, 0x0f}},
		{"bad wire type", directorpb.Director_UpdateEnvoyStatus_FullMethodName, []byte{0x0f, 0x01}},
		{"invalid utf-8 in a string", directorpb.Director_WaitExperiment_FullMethodName, []byte{0x0a, 0x02, 0xff, 0xfe}},
		{"garbage", directorpb.Director_GetEnvoys_FullMethodName, []byte("\xde\xad\xbe\xef\x00\x01")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out []byte
			in := tt.body
			err := conn.Invoke(context.Background(), tt.method, &in, &out, grpc.ForceCodec(rawCodec{}))
			if code := status.Code(err); code == codes.OK || code == codes.Unknown {
				t.Fatalf("got %v, want a refusal with a proper code", err)
			}
		})
	}
	// Still serving.
	if _, err := directorpb.NewDirectorClient(conn).GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{}); err != nil {
		t.Fatalf("after malformed requests: %v", err)
	}
}
