package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// A job signature binds a job archive to its submitter: fladmin signs the
// archive's SHA-256 with the submitter's admin key, and an envoy checks it
// against its own copy of the federation's CA before it unpacks anything.
// The director only carries it, so a director that alters an archive or
// invents a submitter cannot get a site to run code.

// MaxJobSignature bounds an encoded JobSignature: a certificate and a
// signature are a few KiB.
const MaxJobSignature = 16 << 10

// jobSignatureVersion is JobSignature.Version of this format.
const jobSignatureVersion = 1

// signedPrefix starts what is signed, so a job signature can never be taken
// for a signature over anything else made with the same key.
const signedPrefix = "fedplane job archive v1\x00sha256:"

// ErrBadSignature is wrapped by every JobSignature verification failure.
var ErrBadSignature = errors.New("bad job signature")

// JobSignature is a submitter's signature over a job archive. Its JSON
// form travels in the admin channel's submit_job meta and in the
// fedplane-job-signature-bin header of GetExperimentData.
type JobSignature struct {
	Version int `json:"version"`
	// SHA256 is the archive's digest, lowercase hex.
	SHA256 string `json:"sha256"`
	// Signature is the signer's signature of signedPrefix+SHA256 (ECDSA
	// ASN.1 or RSA PKCS #1 v1.5 over its SHA-256, or Ed25519 over it).
	Signature []byte `json:"signature"`
	// Cert is the signer's certificate, DER.
	Cert []byte `json:"cert"`
}

// SignJob signs an archive's digest (lowercase hex SHA-256) with cert's
// private key. cert is the submitter's admin certificate as fladmin loads
// it for TLS.
func SignJob(cert tls.Certificate, sha256Hex string) (*JobSignature, error) {
	if err := checkDigest(sha256Hex); err != nil {
		return nil, err
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("sign job: no certificate")
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("sign job: key of type %T cannot sign", cert.PrivateKey)
	}
	msg := []byte(signedPrefix + sha256Hex)
	var (
		sig []byte
		err error
	)
	switch signer.Public().(type) {
	case ed25519.PublicKey:
		sig, err = signer.Sign(rand.Reader, msg, crypto.Hash(0))
	case *ecdsa.PublicKey, *rsa.PublicKey:
		h := sha256.Sum256(msg)
		sig, err = signer.Sign(rand.Reader, h[:], crypto.SHA256)
	default:
		return nil, fmt.Errorf("sign job: unsupported key type %T", signer.Public())
	}
	if err != nil {
		return nil, fmt.Errorf("sign job: %w", err)
	}
	return &JobSignature{Version: jobSignatureVersion, SHA256: sha256Hex, Signature: sig, Cert: cert.Certificate[0]}, nil
}

// Marshal encodes s as JSON.
func (s *JobSignature) Marshal() []byte {
	b, _ := json.Marshal(s) // cannot fail: plain fields
	return b
}

// ParseJobSignature decodes a JobSignature of at most MaxJobSignature bytes.
// It checks the form only; Verify checks what it says.
func ParseJobSignature(b []byte) (*JobSignature, error) {
	if len(b) > MaxJobSignature {
		return nil, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrBadSignature, len(b), MaxJobSignature)
	}
	var s JobSignature
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if s.Version != jobSignatureVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrBadSignature, s.Version, jobSignatureVersion)
	}
	if err := checkDigest(s.SHA256); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if len(s.Signature) == 0 || len(s.Cert) == 0 {
		return nil, fmt.Errorf("%w: signature and certificate are required", ErrBadSignature)
	}
	return &s, nil
}

// Verify checks that s signs the archive whose digest is sha256Hex (as the
// verifier computed it, never as anyone said it), that its certificate
// chains to roots as a client certificate valid at now, and that it is an
// admin's whose role may submit jobs (project_admin or lead). It returns the
// signer's identity. Errors wrap ErrBadSignature and say what is wrong.
func (s *JobSignature) Verify(roots *x509.CertPool, sha256Hex string, now time.Time) (Identity, error) {
	if s.SHA256 != sha256Hex {
		return Identity{}, fmt.Errorf("%w: it signs archive sha256 %s, but the archive received has %s (the archive was changed after it was signed)",
			ErrBadSignature, short(s.SHA256), short(sha256Hex))
	}
	cert, err := x509.ParseCertificate(s.Cert)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: signer certificate: %v", ErrBadSignature, err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return Identity{}, fmt.Errorf("%w: signer certificate (CN %q) is not from this site's CA: %v", ErrBadSignature, cert.Subject.CommonName, err)
	}
	id := IdentityOf(cert)
	if id.Kind != KindAdmin || (id.Role != RoleProjectAdmin && id.Role != RoleLead) {
		return Identity{}, fmt.Errorf("%w: signer %q is not an admin who may submit jobs (role %q)", ErrBadSignature, id.Name, id.Role)
	}
	msg := []byte(signedPrefix + s.SHA256)
	var alg x509.SignatureAlgorithm
	switch cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	case ed25519.PublicKey:
		alg = x509.PureEd25519
	default:
		return Identity{}, fmt.Errorf("%w: unsupported key type %T", ErrBadSignature, cert.PublicKey)
	}
	if err := cert.CheckSignature(alg, msg, s.Signature); err != nil {
		return Identity{}, fmt.Errorf("%w: the signature does not verify with %s's certificate: %v", ErrBadSignature, id.Name, err)
	}
	return id, nil
}

// checkDigest accepts a lowercase hex SHA-256.
func checkDigest(h string) error {
	if len(h) != 2*sha256.Size {
		return fmt.Errorf("digest %q is not a hex SHA-256", short(h))
	}
	if _, err := hex.DecodeString(h); err != nil || h != toLowerHex(h) {
		return fmt.Errorf("digest %q is not lowercase hex", short(h))
	}
	return nil
}

func toLowerHex(h string) string {
	b := []byte(h)
	for i, c := range b {
		if 'A' <= c && c <= 'F' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// short shortens a digest for messages.
func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
