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
	dir     string
	kind    string
	name    string
	hosts   []string
	role    string
	org     string
	days    int
	keyType string
	// FLARE's admin startup kit (--kind admin).
	kit       string
	adminHost string
	adminPort int
	flPort    int
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

--org sets the O of any kind. issue refuses to replace existing files.

For an admin who uses NVIDIA FLARE 2.6's own admin console or FLARE API
session (see the README's compatibility table):

  --key-type rsa       an RSA key instead of ECDSA P-256: FLARE's client
                       signs each job folder with RSA-PSS before it
                       uploads it, and cannot with an ECDSA key.
  --startup-kit DIR    also write FLARE's admin startup kit into DIR:
                       startup/fed_admin.json naming the director's admin
                       port (--admin-host, --admin-port; --fl-port is the
                       gRPC port, which the kit names too),
                       startup/client.crt, client.key and rootCA.pem, and
                       startup/fl_admin.sh, which starts FLARE's console.
                       Point FLARE's tools at DIR (new_secure_session's
                       startup_kit_location, or run startup/fl_admin.sh).`,
		Example: `  # Envoys dial fl.example.org:50051, fladmin on the same LAN dials 10.0.0.7:8003:
  director pki issue --dir pki --kind director --name director --host fl.example.org --host 10.0.0.7
  director pki issue --dir pki --kind envoy --name env_one --org "Hospital A"
  director pki issue --dir pki --kind admin --name alice --role lead --org "Lab B"
  # An admin who uses FLARE 2.6's console, director's admin port at fl.example.org:8003:
  director pki issue --dir pki --kind admin --name carol --role lead --key-type rsa \
    --startup-kit carol-kit --admin-host fl.example.org`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.keyType, "key-type", pki.KeyECDSA, "admin only: key type, ecdsa or rsa (rsa for FLARE's tools, which sign job folders with RSA-PSS)")
	f.StringVar(&o.kit, "startup-kit", "", "admin only: also write FLARE 2.6's admin startup kit into this directory")
	f.StringVar(&o.adminHost, "admin-host", "localhost", "with --startup-kit: the host FLARE's client dials for the director's admin port")
	f.IntVar(&o.adminPort, "admin-port", 8003, "with --startup-kit: the director's admin port")
	f.IntVar(&o.flPort, "fl-port", 50051, "with --startup-kit: the director's gRPC port")
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
	case o.kit != "" && o.kind != pki.KindAdmin:
		return cli.Usagef("--startup-kit is for --kind admin: it is FLARE's admin startup kit")
	}
	kit := pki.FlareKitOptions{Name: o.name, AdminHost: o.adminHost, AdminPort: o.adminPort, FLPort: o.flPort}
	if o.kit != "" {
		// Check the kit's options before the certificate is issued, so a
		// typo does not leave a certificate without its kit.
		if err := pki.CheckFlareKit(kit); err != nil {
			return pkiError("startup kit", err)
		}
	}
	err := pki.Issue(o.dir, pki.IssueOptions{
		Kind:    o.kind,
		Name:    o.name,
		Hosts:   o.hosts,
		Role:    o.role,
		Org:     o.org,
		Days:    o.days,
		KeyType: o.keyType,
	})
	if err != nil {
		return pkiError("issue certificate", err)
	}
	fmt.Fprintf(w, "wrote %s\n", filepath.Join(o.dir, o.name+".crt"))
	fmt.Fprintf(w, "wrote %s (private key, mode 0600)\n", filepath.Join(o.dir, o.name+".key"))
	if o.kit != "" {
		if err := pki.WriteFlareAdminKit(o.dir, o.kit, kit); err != nil {
			return pkiError("write startup kit", err)
		}
		fmt.Fprintf(w, "wrote FLARE's admin startup kit in %s (startup/%s, key mode 0600)\n", o.kit, pki.FlareAdminConfig)
	}
	return nil
}

// pkiError makes invalid options (bad name, kind, role, host) usage errors.
func pkiError(what string, err error) error {
	if errors.Is(err, api.ErrInvalid) {
		return &cli.UsageError{Err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}
