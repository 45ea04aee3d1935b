package openfl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	gproto "google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/tensor"
)

// This file serves trained models (GetTrainedModel on both services). The
// reply is one message holding the whole model, so it is encoded once per
// model file and shared by every caller who asks meanwhile: the encoding
// rides in the reply's unknown fields (the encoding of model_proto, field
// 1, in both services' TrainedModelResponse), which proto.Marshal would
// copy out as they are; replyCodec hands gRPC the shared bytes without
// copying them. The downloads gate bounds how many models are held, and a
// caller's hold (its place in the gate, its reference to the encoding)
// ends only once gRPC has written the reply's last frame, or the call is
// gone without a reply: gRPC cancels a call's context as soon as the reply
// is queued, and a client that does not read would otherwise have the
// director encode and queue model after model (replyHolds).

// modelCache holds encoded trained models while callers use them.
type modelCache struct {
	mu sync.Mutex
	m  map[string]*cachedModel // by model file
}

type cachedModel struct {
	ready chan struct{} // closed once b or err is set
	b     []byte
	err   error
	refs  int
}

// get returns the encoding of the model in file, building it with build
// unless another caller has it or is building it; release drops the
// caller's hold, and the last one drops the bytes.
func (c *modelCache) get(file string, build func() ([]byte, error)) (b []byte, release func(), err error) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]*cachedModel{}
	}
	e, ok := c.m[file]
	if !ok {
		e = &cachedModel{ready: make(chan struct{})}
		c.m[file] = e
	}
	e.refs++
	c.mu.Unlock()
	release = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if e.refs--; e.refs == 0 && c.m[file] == e {
			delete(c.m, file)
		}
	}
	if !ok {
		e.b, e.err = build()
		if e.err != nil {
			c.mu.Lock()
			delete(c.m, file) // the next caller tries again
			c.mu.Unlock()
		}
		close(e.ready)
	}
	<-e.ready
	if e.err != nil {
		release()
		return nil, nil, e.err
	}
	return e.b, release, nil
}

// trainedModel returns the encoded model_proto field of a trained model of
// an experiment, shared with concurrent callers, within the downloads
// gate; release ends the caller's hold. A model over the gRPC message
// limit is refused with a pointer to download-job.
func (s *service) trainedModel(ctx context.Context, name string, best bool) (b []byte, release func(), err error) {
	which := director.ModelLast
	if best {
		which = director.ModelBest
	}
	leave, err := s.d.EnterDownload(s.callerKey(ctx))
	if err != nil {
		return nil, nil, err
	}
	x, f, err := s.d.OpenTrainedModel(ctx, s.caller(ctx), name, which)
	if err != nil {
		leave()
		return nil, nil, err
	}
	defer f.Close()
	b, drop, err := s.models.get(f.LocalPath(), func() ([]byte, error) { return encodeModel(x) })
	if err != nil {
		leave()
		return nil, nil, err
	}
	s.d.Prometheus().Sent(metrics.KindModels, int64(len(b)))
	return b, func() { drop(); leave() }, nil
}

// encodeModel encodes a model as TrainedModelResponse's model_proto field.
func encodeModel(x *tensor.Index) ([]byte, error) {
	var total int64
	for _, t := range x.Tensors {
		total += t.Size
	}
	if total > api.MaxMessageSize-(1<<20) {
		return nil, fmt.Errorf("%w: the model is %d bytes, over the gRPC message limit; use fladmin download-job", api.ErrTooLarge, total)
	}
	mp := &basepb.ModelProto{}
	for _, t := range x.Tensors {
		data := make([]byte, t.Size)
		if _, err := x.Section(t).ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && t.Size == 0) {
			return nil, fmt.Errorf("read tensor %q: %w", t.Name, err)
		}
		mp.Tensors = append(mp.Tensors, tensor.NamedTensor(t, data, []string{"model"}, false))
	}
	return gproto.Marshal(&directorpb.TrainedModelResponse{ModelProto: mp})
}

// replyCodec is gRPC's protobuf codec, but for a TrainedModelResponse that
// holds nothing but unknown fields (a shared encoded model), whose
// encoding is those bytes: it hands them to gRPC as they are.
type replyCodec struct {
	encoding.CodecV2
	holds *replyHolds
}

func newReplyCodec(holds *replyHolds) replyCodec {
	return replyCodec{CodecV2: encoding.GetCodecV2(proto.Name), holds: holds}
}

// replyHolds are the holds of replies not yet handed to gRPC, by reply.
type replyHolds struct{ m sync.Map }

// hold ties release to reply: the codec takes it when it encodes the
// reply and runs it once the transport has written it; if the call ends
// before (the client went away, the reply was never encoded), it runs
// when ctx ends.
//
// gRPC frees a queued reply only when its stream is cleaned up, not when
// the connection drops: so every hold also ends when its connection does
// (connHolds, on a listener from Listener), or a client that hangs up
// mid-reply would keep its place in the downloads gate for good.
func (h *replyHolds) hold(ctx context.Context, reply any, release func()) {
	var once sync.Once
	rel := func() { once.Do(release) }
	if ch := connOf(ctx); ch != nil {
		id := ch.add(rel)
		inner := rel
		rel = func() { ch.remove(id); inner() }
	}
	h.m.Store(reply, rel)
	context.AfterFunc(ctx, func() {
		if _, ok := h.m.LoadAndDelete(reply); ok {
			rel()
		}
	})
}

// take returns reply's release, for the codec, and forgets it.
func (h *replyHolds) take(reply any) func() {
	if h == nil {
		return nil
	}
	if v, ok := h.m.LoadAndDelete(reply); ok {
		return v.(func())
	}
	return nil
}

// releasePool is the BufferPool of a shared encoding handed to gRPC: the
// transport frees the buffer once it has written it, which "puts" it
// here, which ends the caller's hold. It never hands out buffers.
type releasePool struct{ release func() }

func (p releasePool) Get(length int) *[]byte {
	b := make([]byte, length)
	return &b
}

func (p releasePool) Put(*[]byte) { p.release() }

func (c replyCodec) Marshal(v any) (mem.BufferSlice, error) {
	var m gproto.Message
	switch r := v.(type) {
	case *directorpb.TrainedModelResponse:
		if r.ModelProto == nil {
			m = r
		}
	case *aggregatorpb.TrainedModelResponse:
		if r.ModelProto == nil {
			m = r
		}
	}
	if m != nil {
		if raw := m.ProtoReflect().GetUnknown(); len(raw) > 0 {
			release := c.holds.take(v)
			switch {
			case release == nil:
				return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
			case mem.IsBelowBufferPoolingThreshold(cap(raw)):
				// gRPC would not free so small a buffer through a pool:
				// send a copy and let go now.
				out := mem.SliceBuffer(slices.Clone(raw))
				release()
				return mem.BufferSlice{out}, nil
			}
			data := []byte(raw)
			return mem.BufferSlice{mem.NewBuffer(&data, releasePool{release})}, nil
		}
	}
	return c.CodecV2.Marshal(v)
}

// connHolds are the holds of one connection's replies, which end with it.
type connHolds struct {
	mu    sync.Mutex
	next  int
	m     map[int]func()
	ended bool
}

// add registers release, which runs at once if the connection has ended,
// and returns its id for remove.
func (c *connHolds) add(release func()) int {
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		release()
		return -1
	}
	c.next++
	id := c.next
	c.m[id] = release
	c.mu.Unlock()
	return id
}

func (c *connHolds) remove(id int) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// end runs every hold still pending on the connection.
func (c *connHolds) end() {
	c.mu.Lock()
	c.ended = true
	pending := c.m
	c.m = nil
	c.mu.Unlock()
	for _, release := range pending {
		release()
	}
}

// Listener returns lis with its connections tracked, so that the holds of
// replies still queued on a connection end when it closes: serve the
// director's gRPC server on it. (A stats handler would tell the same, at
// the price of events on every call; a listener costs nothing per call.)
func Listener(lis net.Listener) net.Listener { return trackedListener{lis} }

type trackedListener struct{ net.Listener }

// connKey names a live connection by both ends, as a call's peer does.
type connKey struct{ local, remote string }

// conns are the live connections of every tracked listener.
var conns struct {
	sync.Mutex
	m map[connKey]*connHolds
}

func (l trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	k := connKey{c.LocalAddr().String(), c.RemoteAddr().String()}
	ch := &connHolds{m: map[int]func(){}}
	conns.Lock()
	if conns.m == nil {
		conns.m = map[connKey]*connHolds{}
	}
	conns.m[k] = ch
	conns.Unlock()
	return &trackedConn{Conn: c, key: k, holds: ch, raw: newRawReader(c)}, nil
}

type trackedConn struct {
	net.Conn
	key   connKey
	holds *connHolds
	once  sync.Once
	raw   *rawReader // nil but for a bare socket on Unix (connread_unix.go)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		conns.Lock()
		if conns.m[c.key] == c.holds {
			delete(conns.m, c.key)
		}
		conns.Unlock()
		c.holds.end()
	})
	return c.Conn.Close()
}

// connOf returns the holds of the tracked connection a call came on, or
// nil.
func connOf(ctx context.Context) *connHolds {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil || p.LocalAddr == nil {
		return nil
	}
	conns.Lock()
	defer conns.Unlock()
	return conns.m[connKey{p.LocalAddr.String(), p.Addr.String()}]
}
