package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/fedplane/fedplane/pki"
)

// maxPolicySize bounds a site policy file; a real one is a few lines.
const maxPolicySize = 1 << 20

// Approval modes of a Policy.
const (
	// ApprovalAuto runs every job the policy allows.
	ApprovalAuto = "auto"
	// ApprovalManual holds every job the policy allows until the site
	// operator runs "envoy approve" or "envoy reject".
	ApprovalManual = "manual"
)

// Policy is a site's own rules for the jobs it runs (envoy start
// --policy). It is applied to the identity in the job's signature, which
// the envoy verifies against its own CA, and to the training command in the
// archive that signature covers: never to anything only the director says.
// An envoy with a policy runs signed jobs only.
type Policy struct {
	// Submitters may run jobs here: a submitter is allowed when it
	// matches any rule. Left out, every submitter the CA vouches for (as
	// project_admin or lead) is allowed; an empty list allows none.
	Submitters []SubmitterRule `yaml:"submitters"`
	// Commands restricts the training commands, when set.
	Commands *CommandRules `yaml:"commands"`
	// Approval is ApprovalAuto (the default) or ApprovalManual.
	Approval string `yaml:"approval"`
	// ShareLogs sends the training command's output (stdout and stderr,
	// the last api.MaxSharedLog bytes, the site's paths redacted) to the
	// director, where the job's submitter reads it with fladmin logs.
	// Left out, nothing of it is sent but a failure's stderr tail.
	ShareLogs bool `yaml:"share_logs"`
}

// SubmitterRule matches submitters by the name (CN), organisation (O) and
// role (OU) of their certificates. Every field given must match; at least
// one must be given.
type SubmitterRule struct {
	Name string `yaml:"name"`
	Org  string `yaml:"org"`
	Role string `yaml:"role"`
}

// CommandRules allow a training command (job.json's train.command, as
// written there) when its program is one of Programs or the whole command
// is one of Exact.
type CommandRules struct {
	Programs []string   `yaml:"programs"`
	Exact    [][]string `yaml:"exact"`
}

// LoadPolicy reads and checks a site policy file. Unknown keys are errors,
// so that a misspelt rule never silently allows more.
func LoadPolicy(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("site policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPolicySize+1))
	if err != nil {
		return nil, fmt.Errorf("site policy %s: %w", path, err)
	}
	if len(b) > maxPolicySize {
		return nil, fmt.Errorf("site policy %s: larger than %d bytes", path, maxPolicySize)
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("site policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses and checks a site policy.
func ParsePolicy(b []byte) (*Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return &p, nil
}

func (p *Policy) check() error {
	switch p.Approval {
	case "":
		p.Approval = ApprovalAuto
	case ApprovalAuto, ApprovalManual:
	default:
		return fmt.Errorf("approval %q: want %q or %q", p.Approval, ApprovalAuto, ApprovalManual)
	}
	for i, r := range p.Submitters {
		if r == (SubmitterRule{}) {
			return fmt.Errorf("submitters[%d] is empty: give name, org or role", i)
		}
		if r.Role != "" && r.Role != pki.RoleProjectAdmin && r.Role != pki.RoleLead {
			return fmt.Errorf("submitters[%d]: role %q: only %s and %s may submit jobs", i, r.Role, pki.RoleProjectAdmin, pki.RoleLead)
		}
	}
	if c := p.Commands; c != nil {
		for i, prog := range c.Programs {
			if prog == "" {
				return fmt.Errorf("commands.programs[%d] is empty", i)
			}
		}
		for i, argv := range c.Exact {
			if len(argv) == 0 || argv[0] == "" {
				return fmt.Errorf("commands.exact[%d] is empty", i)
			}
		}
	}
	return nil
}

// Manual reports whether jobs wait for the site operator.
func (p *Policy) Manual() bool { return p.Approval == ApprovalManual }

// AllowSubmitter says why id may not run jobs here, or returns nil.
func (p *Policy) AllowSubmitter(id pki.Identity) error {
	if p.Submitters == nil {
		return nil
	}
	for _, r := range p.Submitters {
		if (r.Name == "" || r.Name == id.Name) && (r.Org == "" || r.Org == id.Org) && (r.Role == "" || r.Role == id.Role) {
			return nil
		}
	}
	return fmt.Errorf("submitter %s is not allowed to run jobs on this site", describe(id))
}

// AllowCommand says why argv may not run here, or returns nil.
func (p *Policy) AllowCommand(argv []string) error {
	c := p.Commands
	if c == nil {
		return nil
	}
	if len(argv) > 0 && slices.Contains(c.Programs, argv[0]) {
		return nil
	}
	for _, ok := range c.Exact {
		if slices.Equal(ok, argv) {
			return nil
		}
	}
	return fmt.Errorf("training command %q is not allowed on this site", argv)
}

// describe names a submitter with its organisation and role.
func describe(id pki.Identity) string {
	var parts []string
	if id.Org != "" {
		parts = append(parts, "org "+id.Org)
	}
	if id.Role != "" {
		parts = append(parts, "role "+id.Role)
	}
	if len(parts) == 0 {
		return id.Name
	}
	return id.Name + " (" + strings.Join(parts, ", ") + ")"
}
