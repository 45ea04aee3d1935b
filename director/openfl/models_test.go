package openfl

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/tensor"
)

// TestModelCacheShares: callers at once share one encoding; once the last
// lets go it is dropped, and a failed build is not kept.
func TestModelCacheShares(t *testing.T) {
	var c modelCache
	builds := 0
	build := func() ([]byte, error) { builds++; return []byte{byte(builds)}, nil }
	a, releaseA, err := c.get("m1", build)
	if err != nil {
		t.Fatal(err)
	}
	b, releaseB, _ := c.get("m1", build)
	if builds != 1 || &a[0] != &b[0] {
		t.Fatalf("two callers at once: %d builds, shared %v; want 1 build, shared", builds, &a[0] == &b[0])
	}
	releaseA()
	releaseB()
	if len(c.m) != 0 {
		t.Fatalf("after both let go: %d models held, want 0", len(c.m))
	}
	if _, _, err := c.get("m2", func() ([]byte, error) { return nil, errors.New("broken") }); err == nil {
		t.Fatal("a failed build: no error")
	}
	if _, release, err := c.get("m2", build); err != nil || len(c.m) != 1 {
		t.Fatalf("after a failed build: %v, %d held", err, len(c.m))
	} else {
		release()
	}
}

// TestReplyCodec: a reply holding a shared encoding goes out as those very
// bytes, which decode as the model on both services' wires; other
// messages encode as proto's codec encodes them.
func TestReplyCodec(t *testing.T) {
	mp := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
		tensor.NamedTensor(tensor.Span{Name: "w", DType: "F32", Shape: []int64{2}}, []byte{0, 0, 128, 63, 0, 0, 0, 64}, []string{"model"}, false),
	}}
	enc, err := proto.Marshal(&directorpb.TrainedModelResponse{ModelProto: mp})
	if err != nil {
		t.Fatal(err)
	}
	codec := newReplyCodec(nil)
	d := &directorpb.TrainedModelResponse{}
	d.ProtoReflect().SetUnknown(enc)
	a := &aggregatorpb.TrainedModelResponse{}
	a.ProtoReflect().SetUnknown(enc)
	for _, reply := range []proto.Message{d, a} {
		out, err := codec.Marshal(reply)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || &out[0].ReadOnlyData()[0] != &enc[0] {
			t.Fatalf("%T: the encoding was copied", reply)
		}
		back := reply.ProtoReflect().New().Interface()
		if err := proto.Unmarshal(out.Materialize(), back); err != nil {
			t.Fatal(err)
		}
		got := back.ProtoReflect().Get(back.ProtoReflect().Descriptor().Fields().ByName("model_proto")).Message().Interface()
		if !proto.Equal(got, mp) {
			t.Fatalf("%T: decoded %v, want %v", reply, got, mp)
		}
	}
	other := &directorpb.TrainedModelResponse{ModelProto: mp}
	out, err := codec.Marshal(other)
	if err != nil || !bytes.Equal(out.Materialize(), enc) {
		t.Fatalf("a plain reply: %v, %x; want %x", err, out.Materialize(), enc)
	}
}

// TestReplyHoldsLastUntilWritten: a caller's hold on a shared model ends
// when gRPC frees the encoded reply (written), not when the call's context
// ends (which gRPC does as soon as the reply is queued); a reply never
// encoded lets go when its call ends.
func TestReplyHoldsLastUntilWritten(t *testing.T) {
	big := make([]byte, 64<<10)
	big[0] = 0x0a // field 1, bytes: any content will do for the codec
	holds := &replyHolds{}
	codec := newReplyCodec(holds)

	var released atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	reply := &directorpb.TrainedModelResponse{}
	reply.ProtoReflect().SetUnknown(big)
	holds.hold(ctx, reply, func() { released.Add(1) })
	out, err := codec.Marshal(reply)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the reply is queued: gRPC ends the call's context
	time.Sleep(10 * time.Millisecond)
	if n := released.Load(); n != 0 {
		t.Fatalf("released %d times while the reply is still queued", n)
	}
	out.Free() // the transport has written it
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times once written, want 1", n)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	never := &directorpb.TrainedModelResponse{}
	never.ProtoReflect().SetUnknown(big)
	holds.hold(ctx2, never, func() { released.Add(1) })
	cancel2() // the call is gone before its reply was encoded
	deadline := time.Now().Add(5 * time.Second)
	for released.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("a reply never encoded was never released")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := codec.Marshal(never); err != nil { // too late: sent without a hold
		t.Fatal(err)
	}
	if n := released.Load(); n != 2 {
		t.Fatalf("released %d times, want 2", n)
	}
}

// TestHoldsEndWithTheConnection: a reply gRPC still holds when its
// connection drops is never freed by gRPC; its hold ends with the
// connection, once. The calls run on a real server over a tracked
// listener, so their peers are what tracking keys on.
func TestHoldsEndWithTheConnection(t *testing.T) {
	big := make([]byte, 64<<10)
	big[0] = 0x0a
	holds := &replyHolds{}
	codec := newReplyCodec(holds)
	var released atomic.Int32
	calls := make(chan context.Context, 1)
	proceed := make(chan struct{})
	srv := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		calls <- ss.Context()
		<-proceed
		return nil
	}))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(Listener(lis))
	defer srv.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	go conn.Invoke(context.Background(), "/x.Y/Z", &directorpb.GetEnvoysRequest{}, &directorpb.GetEnvoysResponse{})
	ctx := <-calls
	if connOf(ctx) == nil {
		t.Fatal("a call's peer is not a tracked connection")
	}

	reply := &directorpb.TrainedModelResponse{}
	reply.ProtoReflect().SetUnknown(big)
	holds.hold(ctx, reply, func() { released.Add(1) })
	out, err := codec.Marshal(reply) // queued; the client never reads it
	if err != nil {
		t.Fatal(err)
	}
	if n := released.Load(); n != 0 {
		t.Fatalf("released %d times while queued", n)
	}
	conn.Close() // the client hangs up
	deadline := time.Now().Add(10 * time.Second)
	for released.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the hold did not end with its connection")
		}
		time.Sleep(time.Millisecond)
	}
	out.Free()
	close(proceed)
	if n := released.Load(); n != 1 {
		t.Fatalf("released %d times, want once", n)
	}
	// A hold taken on a call whose connection is gone ends with the call.
	late := &directorpb.TrainedModelResponse{}
	holds.hold(ctx, late, func() { released.Add(1) })
	for released.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("a hold after its connection closed never ended")
		}
		time.Sleep(time.Millisecond)
	}
}
