package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestCertProblem(t *testing.T) {
	grpcText := func(x509msg string) error {
		return fmt.Errorf(`rpc error: code = Unavailable desc = connection error: desc = "transport: authentication handshake failed: tls: failed to verify certificate: %s"`, x509msg)
	}
	tests := []struct {
		name string
		err  error
		want string // "" for none
	}{
		{"typed unknown authority", fmt.Errorf("dial: %w", x509.UnknownAuthorityError{}), "not signed by the CA in --tls-ca"},
		{"text unknown authority", grpcText("x509: certificate signed by unknown authority"), "not signed by the CA in --tls-ca"},
		{"typed hostname", x509.HostnameError{Certificate: &x509.Certificate{DNSNames: []string{"fl.example.org"}}, Host: "10.0.0.7"}, "it carries fl.example.org"},
		{"text name", grpcText("x509: certificate is valid for localhost, not fl.example.org"), "does not carry the name dialled (x509: certificate is valid for localhost, not fl.example.org)"},
		{"text IP", grpcText("x509: cannot validate certificate for 10.0.0.7 because it doesn't contain any IP SANs"), "--tls-server-name"},
		{"typed expired", x509.CertificateInvalidError{Reason: x509.Expired}, "has expired or is not yet valid"},
		{"text expired", grpcText("x509: certificate has expired or is not yet valid: current time X is after Y"), "has expired"},
		{"peer refused ours", errors.New("read: remote error: tls: unknown certificate authority"), "refused this program's certificate (tls: unknown certificate authority)"},
		{"other alert", errors.New("remote error: tls: protocol version not supported"), ""},
		{"unreachable", errors.New("connect: connection refused"), ""},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CertProblem(tt.err)
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Fatalf("got %q, want %q in it", got, tt.want)
			}
		})
	}
}
