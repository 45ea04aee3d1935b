package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// fedplane speaks mutual TLS on every port when given certificates from the
// federation's CA (`director pki`): TLS 1.2 or newer, the CA as the only
// trust root, client certificates required. These builders are the only
// ones: the director, the envoy and fladmin all get their tls.Config here.

// ServerTLS builds the tls.Config of a server that requires a client
// certificate signed by the CA in caFile (the only trust root) and presents
// certFile/keyFile. Errors name the file that is missing or bad.
func ServerTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	pool, cert, err := loadTLSFiles(caFile, certFile, keyFile, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS builds the tls.Config of a client that presents certFile/keyFile
// and accepts only servers whose certificate is signed by the CA in caFile
// and names serverName; if serverName is "", the caller's dialer derives it
// from the address it dials. Errors name the file that is missing or bad.
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	pool, cert, err := loadTLSFiles(caFile, certFile, keyFile, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   serverName,
	}, nil
}

// loadTLSFiles reads the CA pool and the key pair, and checks up front that
// the certificate chains to the CA for usage, so a wrong file fails at start
// rather than in every handshake.
func loadTLSFiles(caFile, certFile, keyFile string, usage x509.ExtKeyUsage) (*x509.CertPool, tls.Certificate, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, fmt.Errorf("tls CA %s: no PEM certificate in it", caFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls key: %w", err)
	}
	if b, _ := pem.Decode(certPEM); b == nil || b.Type != "CERTIFICATE" {
		return nil, tls.Certificate{}, fmt.Errorf("tls certificate %s: no PEM certificate in it", certFile)
	}
	if b, _ := pem.Decode(keyPEM); b == nil || !strings.HasSuffix(b.Type, "PRIVATE KEY") {
		// Say nothing of what is in the file: it may be key material.
		return nil, tls.Certificate{}, fmt.Errorf("tls key %s: no PEM private key in it", keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls key pair %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, tls.Certificate{}, fmt.Errorf("tls certificate %s: %w", certFile, err)
		}
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("tls certificate %s does not verify against CA %s: %w", certFile, caFile, err)
	}
	return pool, cert, nil
}
