package openfl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	gproto "google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/tensor"
)

// This file serves trained models (GetTrainedModel on both services). The
// reply is one message holding the whole model, so it is encoded once per
// model file and shared by every caller who asks meanwhile: the encoding
// rides in the reply's unknown fields (the encoding of model_proto, field
// 1, in both services' TrainedModelResponse), which proto.Marshal would
// copy out as they are; replyCodec hands gRPC the shared bytes without
// copying them. The downloads gate bounds how many models are held.

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
	b, drop, err := s.models.get(f.Name(), func() ([]byte, error) { return encodeModel(x) })
	if err != nil {
		leave()
		return nil, nil, err
	}
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
type replyCodec struct{ encoding.CodecV2 }

func newReplyCodec() replyCodec { return replyCodec{encoding.GetCodecV2(proto.Name)} }

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
			return mem.BufferSlice{mem.SliceBuffer(raw)}, nil
		}
	}
	return c.CodecV2.Marshal(v)
}
