package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/pki"
)

func newPKICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the federation's CA and issue certificates",
		Long: `Create the federation's certificate authority and issue the certificates
with which the director, the envoys and fladmin authenticate each other
(mutual TLS). Every file lands in one directory: ca.crt and ca.key, then
NAME.crt and NAME.key per certificate. Keys are written with mode 0600;
nothing is ever overwritten.

A certificate says who its holder is: the CN is its name (an envoy's
certificate must carry the envoy's name), the OU its kind ("director",
"envoy") or, for an admin, its role (project_admin, lead or member), and
the O its organisation (--org).

Hand each party its NAME.crt, NAME.key and ca.crt; keep ca.key with
whoever issues certificates. The director, each envoy and fladmin take
them as --tls-ca ca.crt --tls-cert NAME.crt --tls-key NAME.key.`,
		Example: `  # A typical setup:
  director pki init --dir pki
  director pki issue --dir pki --kind director --name director --host fl.example.org --host 10.0.0.7
  director pki issue --dir pki --kind envoy --name env_one --org "Hospital A"
  director pki issue --dir pki --kind admin --name alice --role project_admin
  director pki issue --dir pki --kind admin --name bob --role lead --org "Lab B"`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPKIInitCmd(), newPKIIssueCmd())
	return cmd
}

// pkiInitOptions are the flags of `director pki init`.
type pkiInitOptions struct {
	dir  string
	name string
	days int
}

func newPKIInitCmd() *cobra.Command {
	o := &pkiInitOptions{}
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create the federation's CA (ca.crt, ca.key) in a directory",
		Long: `Create the federation's certificate authority in --dir (created with mode
0700 if missing): ca.crt, a self-signed ECDSA P-256 certificate that may
sign only end-entity certificates, and its key ca.key (mode 0600).

Every party trusts ca.crt alone. Keep ca.key safe: whoever has it can issue
certificates for any envoy or admin. init refuses to replace an existing
CA, which would lock out every certificate it issued.`,
		Example: `  director pki init --dir pki
  director pki init --dir pki --name "Consortium X CA" --days 1825`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory for the CA's files (required)")
	f.StringVar(&o.name, "name", pki.DefaultCAName, "the CA's common name")
	f.IntVar(&o.days, "days", pki.DefaultCADays, "days the CA is valid")
	return cmd
}

func (o *pkiInitOptions) run(w io.Writer) error {
	if o.dir == "" {
		return cli.Usagef("--dir is required")
	}
	if o.days <= 0 {
		return cli.Usagef("--days %d: must be positive", o.days)
	}
	if err := pki.InitCA(o.dir, o.name, o.days); err != nil {
		return pkiError("create CA", err)
	}
	fmt.Fprintf(w, "wrote %s\n", filepath.Join(o.dir, pki.CACertFile))
	fmt.Fprintf(w, "wrote %s (private key, mode 0600)\n", filepath.Join(o.dir, pki.CAKeyFile))
	return nil
}

// pkiIssueOptions are the flags of `director pki issue`.
type pkiIssueOptions struct {
	dir   string
	kind  string
	name  string
	hosts []string
	role  string
	org   string
	days  int
}

func newPKIIssueCmd() *cobra.Command {
	o := &pkiIssueOptions{}
	cmd := &cobra.Command{
		Use:   "issue --dir DIR --kind director|envoy|admin --name NAME",
		Short: "Issue a certificate signed by the CA in a directory",
		Long: `Issue a certificate signed by the CA in --dir and write NAME.crt and
NAME.key (mode 0600) next to it. --name becomes the certificate's CN and
the files' base name: letters, digits, '.', '_', '-' and '@', not starting
with a dot, at most 128 bytes.

  --kind director  the director's server certificate. Its --host values
                   (repeatable or comma-separated; DNS names or IPs) must
                   cover every name and address that envoys (--director)
                   and fladmin (--addr) dial: a client checks that the
                   certificate carries the host it dialled, and refuses
                   it otherwise ("TLS certificate problem: ... does not
                   carry the name dialled"). Give the DNS name and the IP
                   if clients use both; default localhost, 127.0.0.1 and
                   ::1, which suits a director reached on loopback only.
                   A client that dials a name the certificate lacks (a
                   tunnel, a load balancer) passes --tls-server-name
                   with one it has. OU is "director".
  --kind envoy     an envoy's client certificate. --name must be the
                   envoy's name: the director refuses an envoy whose name
                   differs from its certificate's CN. OU is "envoy".
  --kind admin     a person using fladmin. --role goes in the OU:
                   project_admin (anything), lead (submit jobs and manage
                   its own) or member (view only, the default).

--org sets the O of any kind. issue refuses to replace existing files.`,
		Example: `  # Envoys dial fl.example.org:50051, fladmin on the same LAN dials 10.0.0.7:8003:
  director pki issue --dir pki --kind director --name director --host fl.example.org --host 10.0.0.7
  director pki issue --dir pki --kind envoy --name env_one --org "Hospital A"
  director pki issue --dir pki --kind admin --name alice --role lead --org "Lab B"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", "", "directory of the CA; the certificate is written there (required)")
	f.StringVar(&o.kind, "kind", "", "certificate kind: director, envoy or admin (required)")
	f.StringVar(&o.name, "name", "", "the certificate's CN and file name; an envoy's name for --kind envoy (required)")
	f.StringSliceVar(&o.hosts, "host", nil, "director only: a DNS name or IP clients dial the director at (repeatable); list every one")
	f.StringVar(&o.role, "role", "", "admin only: project_admin, lead or member (default member)")
	f.StringVar(&o.org, "org", "", "organisation, written as the certificate's O")
	f.IntVar(&o.days, "days", pki.DefaultCertDays, "days the certificate is valid (never past the CA's expiry)")
	return cmd
}

func (o *pkiIssueOptions) run(w io.Writer) error {
	switch {
	case o.dir == "":
		return cli.Usagef("--dir is required")
	case o.kind == "":
		return cli.Usagef("--kind is required: director, envoy or admin")
	case o.name == "":
		return cli.Usagef("--name is required")
	case o.days <= 0:
		return cli.Usagef("--days %d: must be positive", o.days)
	}
	err := pki.Issue(o.dir, pki.IssueOptions{
		Kind:  o.kind,
		Name:  o.name,
		Hosts: o.hosts,
		Role:  o.role,
		Org:   o.org,
		Days:  o.days,
	})
	if err != nil {
		return pkiError("issue certificate", err)
	}
	fmt.Fprintf(w, "wrote %s\n", filepath.Join(o.dir, o.name+".crt"))
	fmt.Fprintf(w, "wrote %s (private key, mode 0600)\n", filepath.Join(o.dir, o.name+".key"))
	return nil
}

// pkiError makes invalid options (bad name, kind, role, host) usage errors.
func pkiError(what string, err error) error {
	if errors.Is(err, api.ErrInvalid) {
		return &cli.UsageError{Err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}
