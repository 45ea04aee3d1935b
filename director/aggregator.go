package director

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
	"github.com/fedplane/fedplane/tensor"
)

// aggregatorOf is job.json's aggregator as tensor.Aggregate takes it:
// fedavg when job.json names none.
func aggregatorOf(m *job.Manifest) tensor.Aggregator {
	a := m.Aggregator
	if a == nil {
		return tensor.Aggregator{Name: tensor.AggFedAvg}
	}
	return tensor.Aggregator{Name: a.Name, Eta: job.Float(a.Eta), Momentum: job.Float(a.Momentum),
		Beta1: job.Float(a.Beta1), Beta2: job.Float(a.Beta2), Tau: job.Float(a.Tau),
		Trim: job.Float(a.Trim), ClipNorm: job.Float(a.ClipNorm)}
}

// pendingState is the server state an aggregation wrote to a temp file,
// until commit moves it next to the round's model.
type pendingState struct {
	tmp *os.File
	hw  *job.HashWriter
	bw  *bufio.Writer
}

// discard removes the temp file, unless commit has renamed it.
func (p *pendingState) discard() {
	if p != nil && p.tmp != nil {
		p.hw.Close()
		p.tmp.Close()
		os.Remove(p.tmp.Name())
	}
}

// aggregateModel writes to w the model that follows round of exp from
// inputs, with job.json's aggregator. An aggregator with server state
// reads the state stored with round's model (none at round 0) and writes
// the next one to the returned pendingState, which the caller commits with
// the model or discards. exp.modelMu is held for reading.
func (d *Director) aggregateModel(ctx context.Context, exp *experiment, round int, inputs []tensor.Input, w io.Writer) (*pendingState, error) {
	agg := aggregatorOf(exp.manifest)
	if len(agg.StateVectors()) == 0 {
		return nil, tensor.Aggregate(w, exp.model.x, inputs, agg, tensor.State{})
	}
	st := tensor.State{Step: round + 1}
	if round > 0 {
		prev, f, err := d.openState(ctx, exp.id, round)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		st.In = prev
	}
	tmp, err := d.createTemp("state-*.safetensors")
	if err != nil {
		return nil, err
	}
	p := &pendingState{tmp: tmp}
	p.hw = job.NewHashWriter(tmp)
	p.bw = bufio.NewWriterSize(p.hw, 1<<20)
	st.Out = p.bw
	if err := tensor.Aggregate(w, exp.model.x, inputs, agg, st); err != nil {
		p.discard()
		return nil, err
	}
	if err := p.bw.Flush(); err != nil {
		p.discard()
		return nil, err
	}
	p.hw.Close()
	return p, nil
}

// stateSuffix ends the name of a server state file, beside its round's
// model in models/.
const stateSuffix = ".state.safetensors"

// statePath is where the server state written with round's model goes.
func statePath(exp *experiment, round int) string {
	return filepath.Join(experimentsDir, exp.id, "models", fmt.Sprintf("round-%04d%s", round, stateSuffix))
}

// removeState removes the server state of round once the next round's is
// committed: only the latest is ever read again, and each is as large as
// the model times its vectors. Its row keeps the path, of a file gone.
func (d *Director) removeState(ctx context.Context, exp *experiment, round int) {
	if round > 0 && len(aggregatorOf(exp.manifest).StateVectors()) > 0 {
		d.removeBlob(ctx, statePath(exp, round))
	}
}

// commitState moves the state next to the model of round next and returns
// where it is and its hash; a nil p (no state) returns "".
func (d *Director) commitState(ctx context.Context, p *pendingState, exp *experiment, next int) (rel, sum string, err error) {
	if p == nil {
		return "", "", nil
	}
	rel = statePath(exp, next)
	tmp := p.tmp
	p.tmp = nil
	if err := d.commitFile(ctx, tmp, rel); err != nil {
		os.Remove(tmp.Name())
		return "", "", err
	}
	return rel, p.hw.Sum(), nil
}

// openState opens the server state stored with round's model.
func (d *Director) openState(ctx context.Context, id string, round int) (*tensor.Index, *blob.Reader, error) {
	rounds, err := d.db.Rounds(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	var r *store.Round
	for i := range rounds {
		if rounds[i].Round == round {
			r = &rounds[i]
		}
	}
	if r == nil || r.StatePath == "" {
		return nil, nil, fmt.Errorf("experiment %s stored no server state with round %d's model", id, round)
	}
	f, err := d.openBlob(ctx, r.StatePath)
	if err != nil {
		return nil, nil, fmt.Errorf("server state of round %d: %w", round, err)
	}
	x, _, err := tensor.ReadSafetensors(f, f.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("server state of round %d: %s: %w", round, r.StatePath, err)
	}
	return x, f, nil
}
