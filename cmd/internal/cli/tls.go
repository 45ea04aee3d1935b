package cli

import (
	"crypto/tls"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fedplane/fedplane/pki"
)

// TLSFlags are --tls-ca, --tls-cert and --tls-key: the federation's CA and
// this program's certificate and key (from `director pki`). All three or
// none.
type TLSFlags struct {
	CA, Cert, Key string
	// ServerName, a client's --tls-server-name, is the name the director's
	// certificate is checked against instead of the dialled host.
	ServerName string
}

// Add registers the flags on c; whose names the certificate's owner.
func (t *TLSFlags) Add(c *cobra.Command, whose string) { t.addTo(c.Flags(), whose) }

// AddPersistent registers the flags on c and all its subcommands.
func (t *TLSFlags) AddPersistent(c *cobra.Command, whose string) { t.addTo(c.PersistentFlags(), whose) }

// AddServerName registers a client's --tls-server-name on fs; dialled
// names the flag that gives the director's address.
func (t *TLSFlags) AddServerName(fs *pflag.FlagSet, dialled string) {
	fs.StringVar(&t.ServerName, "tls-server-name", "", "the name the director's certificate must carry (one of its --host names in \"director pki issue\"), "+
		"when it differs from the host of "+dialled+": for an address behind a tunnel, a proxy or a load balancer")
}

// addTo registers the flags. Their usages hold no backquotes: pflag takes a
// backquoted word for the name of the flag's value in --help.
func (t *TLSFlags) addTo(fs *pflag.FlagSet, whose string) {
	fs.StringVar(&t.CA, "tls-ca", "", "the federation's CA certificate (ca.crt); with --tls-cert and --tls-key turns on mutual TLS")
	fs.StringVar(&t.Cert, "tls-cert", "", whose+" certificate (NAME.crt from \"director pki issue\")")
	fs.StringVar(&t.Key, "tls-key", "", whose+" private key (NAME.key)")
}

// enabled reports whether TLS was asked for, refusing half a configuration.
func (t *TLSFlags) enabled() (bool, error) {
	n := 0
	for _, v := range []string{t.CA, t.Cert, t.Key} {
		if v != "" {
			n++
		}
	}
	if n != 0 && n != 3 {
		return false, Usagef("--tls-ca, --tls-cert and --tls-key go together: give all three or none")
	}
	return n == 3, nil
}

// Server returns a server config requiring and verifying client
// certificates from the CA (pki.ServerTLS); nil without the flags.
func (t *TLSFlags) Server() (*tls.Config, error) {
	on, err := t.enabled()
	if !on || err != nil {
		return nil, err
	}
	return pki.ServerTLS(t.CA, t.Cert, t.Key)
}

// Client returns a client config presenting the certificate and verifying
// the server against the CA (pki.ClientTLS); nil without the flags. The
// server name comes from the dialled address unless --tls-server-name is
// set; that flag without the others is a usage error.
func (t *TLSFlags) Client() (*tls.Config, error) {
	on, err := t.enabled()
	if err != nil {
		return nil, err
	}
	if !on {
		if t.ServerName != "" {
			return nil, Usagef("--tls-server-name needs --tls-ca, --tls-cert and --tls-key")
		}
		return nil, nil
	}
	return pki.ClientTLS(t.CA, t.Cert, t.Key, t.ServerName)
}
