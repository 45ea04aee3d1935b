package envoy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/tensor"
)

// sendResults sends the round's task results to the director, resuming
// after a cut from the byte the director holds (README "Transfers that
// resume"). The results are serialized once into a temp file under the
// experiment's folder, so every attempt sends the same bytes; the stream
// carries the upload's id, offset, size and sha256 (api.MDUploadID...).
// After a cut the envoy asks ResultsOffset how much arrived and sends the
// rest; a director that holds none, or does not know the service, gets it
// all again. A director that already has the results (AlreadyExists: an
// earlier attempt got through, its reply did not) counts as a success.
func (e *Envoy) sendResults(ctx context.Context, x *experiment, h tensor.TaskResultsHeader, trained *tensor.Index, ms []tensor.Metric) error {
	up, err := writeResults(x.dir, h, trained, ms)
	if err != nil {
		return err
	}
	defer up.remove()
	var off int64
	wrong := 0 // refusals naming another offset, a few of which are normal
	b := newBackoff(minBackoff, maxBackoff)
	for {
		held, err := e.sendResultsFrom(ctx, up, off)
		switch {
		case err == nil:
		case status.Code(err) == codes.AlreadyExists:
			x.log.Info("director already has this round's results", api.LogRound, h.Round)
			err = nil
		case off > 0 && status.Code(err) == codes.NotFound && ctx.Err() == nil:
			// The director dropped what it held (restarted, expired):
			// all of it again.
			x.log.Info("director holds none of the task results any more; sending them whole", api.LogRound, h.Round)
			off = 0
			continue
		case held >= 0 && held <= up.size && wrong < 3 && ctx.Err() == nil:
			// Sent from the wrong byte: the director said where to.
			wrong++
			x.log.Info("resuming task results where the director holds them", api.LogRound, h.Round, api.LogBytes, held)
			off = held
			continue
		case transient(err) && ctx.Err() == nil:
			d := b.delay()
			logRetry(x.log, "director unreachable; retrying", "SendLocalTaskResults", err, d)
			if !sleep(ctx, d) {
				return ctx.Err()
			}
			if off, err = e.resultsOffset(ctx, x, up.id); err != nil {
				return err
			}
			if off > 0 {
				x.log.Info("resuming task results where the director holds them", api.LogRound, h.Round, api.LogBytes, off)
			}
			continue
		}
		return err
	}
}

// resultsUpload is the serialized task results of a round, as sent.
type resultsUpload struct {
	f    *os.File
	id   string // 32 random hex digits
	size int64
	sum  string // sha256, hex
}

func (u *resultsUpload) remove() {
	u.f.Close()
	os.Remove(u.f.Name())
}

// writeResults serializes the task results into a temp file in dir,
// hashing them on the way.
func writeResults(dir string, h tensor.TaskResultsHeader, trained *tensor.Index, ms []tensor.Metric) (*resultsUpload, error) {
	f, err := os.CreateTemp(dir, "results-*.pb")
	if err != nil {
		return nil, fmt.Errorf("task results: %w", err)
	}
	up := &resultsUpload{f: f}
	var id [16]byte
	rand.Read(id[:])
	up.id = hex.EncodeToString(id[:])
	hash := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, hash), 1<<20)
	if up.size, err = tensor.WriteTaskResults(bw, h, trained, ms); err == nil {
		err = bw.Flush()
	}
	if err != nil {
		up.remove()
		return nil, fmt.Errorf("task results: %w", err)
	}
	up.sum = hex.EncodeToString(hash.Sum(nil))
	return up, nil
}

// sendResultsFrom streams up's bytes from off. held is the offset the
// director's refusal names (it holds other bytes than off), -1 otherwise.
func (e *Envoy) sendResultsFrom(ctx context.Context, up *resultsUpload, off int64) (held int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, api.MDUploadID, up.id, api.MDOffset, strconv.FormatInt(off, 10),
		api.MDSize, strconv.FormatInt(up.size, 10), api.MDSHA256, up.sum)
	var trailer metadata.MD
	stream, err := e.aggc.SendLocalTaskResults(ctx, grpc.Trailer(&trailer))
	if err != nil {
		return -1, err
	}
	// Send says io.EOF when the director ended the stream early; its
	// status comes with the reply. Any other error cancels the stream,
	// so the director never takes a truncated message for results.
	ended := false
	// At off == size the director holds every byte but its reply was
	// lost: the stream is empty.
	err = sendGrowing(func(m *basepb.DataStream) error {
		err := stream.Send(m)
		ended = errors.Is(err, io.EOF)
		if err == nil {
			e.prom.sentBytes(BytesResults, int64(len(m.GetNpbytes())))
		}
		return err
	}, io.NewSectionReader(up.f, off, up.size-off))
	if err != nil && !ended {
		return -1, err
	}
	_, err = stream.CloseAndRecv()
	held = -1
	if v := trailer.Get(api.MDOffset); err != nil && len(v) == 1 && status.Code(err) == codes.FailedPrecondition {
		if n, perr := strconv.ParseInt(v[0], 10, 64); perr == nil && n >= 0 && n != off {
			held = n
		}
	}
	return held, err
}

// firstResultsChunk is the size of a results stream's first message;
// each next one is twice the last, up to api.ChunkSize. The director holds
// the messages that arrived whole once they include the header (the
// fields before the first tensor, a few hundred bytes), so small first
// messages let a stream cut early resume from what arrived, where one
// first message of api.ChunkSize would have started over. It costs nine
// more messages a stream.
const firstResultsChunk = 4 << 10

// sendGrowing sends r's bytes as DataStream messages of firstResultsChunk
// bytes, then twice that each, up to api.ChunkSize, each in a fresh buffer
// (grpc-go may read a sent message later). It sends nothing when r is
// empty.
func sendGrowing(send func(*basepb.DataStream) error, r io.Reader) error {
	n := firstResultsChunk
	for {
		b := make([]byte, n)
		k, err := io.ReadFull(r, b)
		if k > 0 {
			if serr := send(&basepb.DataStream{Size: uint32(k), Npbytes: b[:k]}); serr != nil {
				return serr
			}
		}
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return nil
		case err != nil:
			return err
		}
		n = min(2*n, api.ChunkSize)
	}
}

// resultsOffset asks the director how many bytes of upload id it holds: 0
// when it holds none or does not resume results.
func (e *Envoy) resultsOffset(ctx context.Context, x *experiment, id string) (int64, error) {
	var n int64
	err := retry(ctx, x.log, "ResultsOffset", func(ctx context.Context) error {
		resp, err := e.xfrc.ResultsOffset(ctx, &transferspb.ResultsOffsetRequest{UploadId: id})
		n = resp.GetOffset()
		return err
	})
	switch status.Code(err) {
	case codes.OK:
		return n, nil
	case codes.NotFound, codes.Unimplemented:
		return 0, nil
	}
	return 0, err
}
