package envoy

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
)

// received is a job archive as downloaded: its size, the digest the envoy
// computed, and the submitter's signature the director passed on, if any.
type received struct {
	size      int64
	sha256    string
	signature []byte
	// limits are what the archive may unpack to: the lower of the
	// envoy's own and those the director advertised.
	limits job.Limits
}

// refusal is the site's refusal of a job, reported to the director with
// api.CodeSiteRefused.
func refusal(format string, args ...any) *failure {
	return &failure{code: api.CodeSiteRefused, kind: FailureRefused, err: fmt.Errorf("refused by site: "+format, args...)}
}

// admit decides whether the archive may run here, before a byte of
// it is unpacked: the signature must verify against the envoy's CA for the
// digest the envoy computed; the site policy, if any, must allow the signer
// and the training command of the archive's job.json; and under manual
// approval the site operator must approve. It returns nil to go on, or a
// refusal.
func (e *Envoy) admit(ctx context.Context, x *experiment, archive *os.File, r received) error {
	signer, signed, err := e.signer(x, r)
	if err != nil {
		return err
	}
	p := e.cfg.Policy
	if p != nil {
		if !signed {
			return refusal("the job is unsigned; this site runs only jobs signed by their submitter (submit with fladmin over TLS)")
		}
		if err := p.AllowSubmitter(signer); err != nil {
			return refusal("%v", err)
		}
	}
	// job.json, read from the archive without unpacking it.
	info, err := job.Inspect(archive, r.size, r.limits)
	if err != nil {
		return err
	}
	m := info.Manifest
	if m.OpenFL != nil {
		// An OpenFL workspace runs in OpenFL's collaborator; this envoy
		// has no command to run for its tasks.
		return refusal("the job is an OpenFL workspace (%s): run it with OpenFL's envoy and collaborator, not fedplane's envoy", job.PlanFile)
	}
	if p == nil {
		return nil
	}
	if err := p.AllowCommand(m.Train.Command); err != nil {
		return refusal("%v", err)
	}
	if !p.Manual() {
		x.log.Info("site policy allows the job", api.LogSubmitter, signer.Name, api.LogCommand, m.Train.Command)
		return nil
	}
	d, err := e.awaitDecision(ctx, x, PendingJob{
		JobID: x.id, Name: m.Name,
		Submitter: signer.Name, SubmitterOrg: signer.Org, SubmitterRole: signer.Role,
		Command: m.Train.Command, SHA256: r.sha256, Size: r.size, Since: time.Now().UTC(),
	})
	if err != nil {
		return err
	}
	if !d.Approved {
		x.log.Warn("the site operator rejected the job", api.LogReason, d.Reason)
		return refusal("the site operator rejected the job: %s", d.Reason)
	}
	x.log.Info("the site operator approved the job", api.LogCaller, d.By)
	return nil
}

// signer verifies the job's signature, if it has one, and returns who
// signed it. A signature that does not verify is refused whether or not the
// site has a policy: the archive or its submitter is not what it claims.
func (e *Envoy) signer(x *experiment, r received) (id pki.Identity, signed bool, err error) {
	if len(r.signature) == 0 {
		return pki.Identity{}, false, nil
	}
	if e.cfg.Roots == nil {
		x.log.Warn("the job is signed, but this envoy has no CA (--tls-ca) to verify it with; running it as an unsigned job")
		return pki.Identity{}, false, nil
	}
	sig, err := pki.ParseJobSignature(r.signature)
	if err == nil {
		id, err = sig.Verify(e.cfg.Roots, r.sha256, time.Now())
	}
	if err != nil {
		return pki.Identity{}, false, refusal("%v", err)
	}
	x.log.Info("job signature verified", api.LogSubmitter, id.Name, api.LogSHA256, r.sha256)
	return id, true, nil
}
