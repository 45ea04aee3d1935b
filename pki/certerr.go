package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
)

// CertProblem says what is wrong, in words an operator can act on, when
// err is a failed certificate check of a client's TLS handshake with the
// director: the director's certificate is from another CA, does not carry
// the name the client dialled, or is out of its validity dates; or the
// director refused the client's own certificate. It returns "" for any
// other error. It reads crypto/tls's typed errors and, since gRPC hands a
// handshake failure on only as the text of an Unavailable status, their
// messages too. The advice names the client flags (cli.TLSFlags) that fix
// each case.
func CertProblem(err error) string {
	if err == nil {
		return ""
	}
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &unknown) || strings.Contains(msg, "x509: certificate signed by unknown authority"):
		return "the director's certificate is not signed by the CA in --tls-ca: it was issued by another CA, or --tls-ca is not the federation's ca.crt"
	case errors.As(err, &hostname) || strings.Contains(msg, "x509: certificate is valid for") || strings.Contains(msg, "x509: certificate is not valid for any names") ||
		strings.Contains(msg, "x509: cannot validate certificate for"):
		detail := "x509: certificate is not valid for the name dialled"
		if i := strings.Index(msg, "x509: "); i >= 0 {
			detail = msg[i:]
		}
		detail = strings.TrimRight(detail, `"`)
		if hostname.Certificate != nil {
			var names []string
			names = append(names, hostname.Certificate.DNSNames...)
			for _, ip := range hostname.Certificate.IPAddresses {
				names = append(names, ip.String())
			}
			detail += "; it carries " + strings.Join(names, ", ")
		}
		return "the director's certificate does not carry the name dialled (" + detail + "): dial one of its names, " +
			"pass --tls-server-name with one of them, or reissue it with \"director pki issue --kind director\" " +
			"and a --host for every name and address clients dial"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired || strings.Contains(msg, "x509: certificate has expired or is not yet valid"):
		return "the director's certificate (or the CA's) has expired or is not yet valid: check its dates and this machine's clock, " +
			"and reissue it with \"director pki issue\" if it ran out"
	case isRemoteCertAlert(err, msg):
		return "the director refused this program's certificate (" + remoteAlert(msg) + "): check that --tls-cert and --tls-key " +
			"were issued by the federation's CA (\"director pki issue\"), have not expired, and are of the right kind"
	}
	return ""
}

// certAlerts are the TLS alerts a server sends about a client's
// certificate.
var certAlerts = []string{"bad certificate", "unknown certificate authority", "certificate expired", "expired certificate",
	"certificate required", "unsupported certificate", "certificate revoked", "certificate unknown"}

func isRemoteCertAlert(err error, msg string) bool {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		msg = ae.Error()
	}
	if !strings.Contains(msg, "remote error: tls: ") {
		return false
	}
	for _, a := range certAlerts {
		if strings.Contains(msg, "tls: "+a) {
			return true
		}
	}
	return false
}

// remoteAlert is the alert's text from msg, e.g. "tls: bad certificate".
func remoteAlert(msg string) string {
	i := strings.Index(msg, "remote error: tls: ")
	s := msg[i+len("remote error: "):]
	if j := strings.IndexAny(s, `"`); j >= 0 {
		s = s[:j]
	}
	return s
}
