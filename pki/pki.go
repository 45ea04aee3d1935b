// Package pki is the federation's public-key infrastructure. One CA signs
// every certificate, and a certificate's subject says who its holder is: CN
// the name (an envoy's name, an admin's name, the director), OU its kind
// ("director", "envoy") or, for an admin, its role (project_admin, lead,
// member), O its organisation.
//
// It is the only place that creates the CA and issues certificates
// (InitCA, Issue; `director pki`), loads TLS material and builds tls.Config
// for servers and clients (ServerTLS, ClientTLS), and reads a caller's
// identity back from a verified chain (IdentityOf, FromConnState,
// FromContext). Authorization, what an identity may do, stays with the
// component that serves the request.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/fedplane/fedplane/api"
)

// Certificate kinds: what a certificate's holder is. The kind of a director
// or envoy certificate is its OU; an admin's OU is its role instead.
const (
	// KindDirector is the director's server certificate, which may also
	// act as a client.
	KindDirector = "director"
	// KindEnvoy is an envoy's client certificate; its CN is the envoy's name.
	KindEnvoy = "envoy"
	// KindAdmin is a person using fladmin; its OU is one of the roles.
	KindAdmin = "admin"
)

// Admin roles, carried in an admin certificate's OU.
const (
	// RoleProjectAdmin may do anything.
	RoleProjectAdmin = "project_admin"
	// RoleLead may submit jobs and manage the jobs it submitted.
	RoleLead = "lead"
	// RoleMember may only view.
	RoleMember = "member"
)

// Defaults and file names of the PKI.
const (
	// DefaultCAName is the CA's common name when InitCA is given none.
	DefaultCAName = "fedplane CA"
	// DefaultCADays is the CA's validity in days when InitCA is given 0.
	DefaultCADays = 3650
	// DefaultCertDays is a certificate's validity in days when Issue is
	// given 0.
	DefaultCertDays = 825
	// CACertFile is the CA certificate's file name in the PKI directory.
	CACertFile = "ca.crt"
	// CAKeyFile is the CA key's file name in the PKI directory.
	CAKeyFile = "ca.key"
)

// maxDays bounds validity periods (100 years), far from where time
// arithmetic could overflow.
const maxDays = 36500

// clockSkew backdates NotBefore so peers whose clocks run a little behind
// accept a certificate issued just now.
const clockSkew = 5 * time.Minute

// defaultHosts are a director certificate's SANs when no host is given.
var defaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// InitCA creates the federation's CA in dir (created with mode 0700 if
// missing): ca.crt (mode 0644), a self-signed ECDSA P-256 certificate named name
// (DefaultCAName if empty) valid for days (DefaultCADays if 0), and ca.key,
// mode 0600. The CA may sign only end-entity certificates (MaxPathLen 0). It
// refuses to replace an existing ca.crt or ca.key.
func InitCA(dir, name string, days int) error {
	if name == "" {
		name = DefaultCAName
	}
	if err := checkText("CA name", name); err != nil {
		return err
	}
	days, err := checkDays(days, DefaultCADays)
	if err != nil {
		return err
	}
	crtPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := refuseExisting(crtPath, keyPath); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.AddDate(0, 0, days),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	return writePair(crtPath, keyPath, der, key)
}

// IssueOptions describe a certificate for Issue.
type IssueOptions struct {
	Kind  string   // KindDirector, KindEnvoy or KindAdmin
	Name  string   // the CN; also the base name of the files written
	Hosts []string // director only: DNS names and IPs as SANs (default localhost, 127.0.0.1, ::1)
	Role  string   // admin only: RoleProjectAdmin, RoleLead or RoleMember (default RoleMember)
	Org   string   // the subject's O, if any
	Days  int      // validity, DefaultCertDays if 0; cut to the CA's own expiry
	// KeyType is KeyECDSA (the default) or, for admins only, KeyRSA.
	KeyType string
}

// Key types of IssueOptions.KeyType. ECDSA P-256 is the default. RSA is
// for admins who use NVIDIA FLARE's own tools, which sign job folders
// with RSA-PSS and cannot sign with any other key.
const (
	KeyECDSA = "ecdsa"
	KeyRSA   = "rsa"
	// RSABits is the size of RSA keys, FLARE's own.
	RSABits = 2048
)

// Issue signs a certificate with the CA in dir and writes dir/NAME.crt and
// dir/NAME.key (0644 and 0600). The subject is CN = Name, O = Org, and OU = the
// role for admins, the kind for envoys and directors. Director certificates
// serve (and may also act as clients) and carry Hosts as SANs; envoy and
// admin certificates are for clients only. It refuses to replace existing
// files. Invalid options are reported wrapped in api.ErrInvalid.
func Issue(dir string, o IssueOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	days, err := checkDays(o.Days, DefaultCertDays)
	if err != nil {
		return err
	}
	caCert, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	crtPath, keyPath := filepath.Join(dir, o.Name+".crt"), filepath.Join(dir, o.Name+".key")
	if err := refuseExisting(crtPath, keyPath); err != nil {
		return err
	}

	var key crypto.Signer
	if o.KeyType == KeyRSA {
		key, err = rsa.GenerateKey(rand.Reader, RSABits)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	notAfter := now.AddDate(0, 0, days)
	if notAfter.After(caCert.NotAfter) {
		// A certificate cannot outlive the CA that vouches for it.
		notAfter = caCert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.Name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if o.Org != "" {
		tmpl.Subject.Organization = []string{o.Org}
	}
	switch o.Kind {
	case KindAdmin:
		role := o.Role
		if role == "" {
			role = RoleMember
		}
		tmpl.Subject.OrganizationalUnit = []string{role}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case KindEnvoy:
		tmpl.Subject.OrganizationalUnit = []string{KindEnvoy}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case KindDirector:
		tmpl.Subject.OrganizationalUnit = []string{KindDirector}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		hosts := o.Hosts
		if len(hosts) == 0 {
			hosts = defaultHosts
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("sign certificate: %w", err)
	}
	return writePair(crtPath, keyPath, der, key)
}

// check validates o before anything touches the disk.
func (o IssueOptions) check() error {
	if err := api.ValidateName("certificate name", o.Name); err != nil {
		return err
	}
	switch o.Kind {
	case KindAdmin:
		if o.Role != "" && !IsAdminRole(o.Role) {
			return fmt.Errorf("%w: unknown role %q; want %s, %s or %s", api.ErrInvalid, o.Role, RoleProjectAdmin, RoleLead, RoleMember)
		}
	case KindEnvoy, KindDirector:
		if o.Role != "" {
			return fmt.Errorf("%w: role %q given for a %s certificate; only admin certificates carry a role", api.ErrInvalid, o.Role, o.Kind)
		}
	default:
		return fmt.Errorf("%w: unknown kind %q; want %s, %s or %s", api.ErrInvalid, o.Kind, KindDirector, KindEnvoy, KindAdmin)
	}
	switch o.KeyType {
	case "", KeyECDSA:
	case KeyRSA:
		if o.Kind != KindAdmin {
			return fmt.Errorf("%w: key type %s given for a %s certificate; only admin certificates may have RSA keys (for NVIDIA FLARE's tools)", api.ErrInvalid, KeyRSA, o.Kind)
		}
	default:
		return fmt.Errorf("%w: unknown key type %q; want %s or %s", api.ErrInvalid, o.KeyType, KeyECDSA, KeyRSA)
	}
	if o.Kind != KindDirector && len(o.Hosts) > 0 {
		return fmt.Errorf("%w: hosts given for a %s certificate; only director certificates carry hosts", api.ErrInvalid, o.Kind)
	}
	for _, h := range o.Hosts {
		if err := checkHost(h); err != nil {
			return err
		}
	}
	if o.Org != "" {
		if err := checkText("organisation", o.Org); err != nil {
			return err
		}
	}
	return nil
}

// loadCA reads the CA certificate and key from dir and checks they belong
// together and can still sign.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	crtPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	crtPEM, err := os.ReadFile(crtPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no CA in %s: run `director pki init --dir %s` first", dir, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read CA: %w", err)
	}
	b, _ := pem.Decode(crtPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, nil, fmt.Errorf("CA certificate %s: no PEM certificate in it", crtPath)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate %s: %w", crtPath, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, nil, fmt.Errorf("CA certificate %s is not a CA certificate", crtPath)
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return nil, nil, fmt.Errorf("CA certificate %s expired on %s", crtPath, cert.NotAfter.Format(time.DateOnly))
	}
	keyPEM, err := os.ReadFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("no CA key %s: run `director pki init --dir %s` first, or issue where the CA key is kept", keyPath, dir)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read CA key: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyPath, crtPath)
	}
	return cert, key, nil
}

// parseKey reads a PEM private key: PKCS #8, as this file writes, or SEC 1
// ("EC PRIVATE KEY") as openssl writes. Errors never quote the key.
func parseKey(keyPEM []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("no PEM private key in it")
	}
	var key any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		return nil, errors.New("malformed private key")
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("unsupported private key type")
	}
	return s, nil
}

// writePair writes a certificate and its key (PKCS #8) durably. If the
// certificate cannot be written the key is removed again, so a failure
// leaves nothing that would block a retry.
func writePair(crtPath, keyPath string, der []byte, key crypto.Signer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeNew(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew writes data to path through a temp file (mode 0600 from its
// creation, then mode), fsyncs it, and moves it into place without replacing
// an existing file; then fsyncs the directory. Hard-linking the temp file to path fails if
// path exists, so two concurrent runs cannot overwrite each other; on file
// systems without hard links it falls back to a rename after a fresh check.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return existsErr(path)
		}
		if err := refuseExisting(path); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return syncDir(dir)
}

// refuseExisting fails if any of paths exists: the PKI never replaces a key
// or certificate, which could lock a running federation out.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		_, err := os.Lstat(p)
		if err == nil {
			return existsErr(p)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func existsErr(path string) error {
	return fmt.Errorf("%w; remove it first to replace it", &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist})
}

// newSerial returns a random 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

// checkDays validates a validity period; 0 means def.
func checkDays(days, def int) (int, error) {
	switch {
	case days == 0:
		return def, nil
	case days < 0:
		return 0, fmt.Errorf("%w: days %d must be positive", api.ErrInvalid, days)
	case days > maxDays:
		return 0, fmt.Errorf("%w: days %d is more than %d (100 years)", api.ErrInvalid, days, maxDays)
	}
	return days, nil
}

// checkHost accepts an IP address or a DNS name (letters, digits, '-', '.',
// and a leading "*." wildcard).
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	name := strings.TrimPrefix(h, "*.")
	ok := name != "" && len(h) <= 253 && !strings.HasPrefix(name, ".") && !strings.HasSuffix(name, ".") && !strings.Contains(name, "..")
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.')
	}
	if !ok {
		return fmt.Errorf("%w: host %q is neither an IP address nor a DNS name", api.ErrInvalid, h)
	}
	return nil
}

// checkText accepts a non-empty subject field of printable UTF-8.
func checkText(what, s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("%w: %s is empty", api.ErrInvalid, what)
	}
	if len(s) > api.MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", api.ErrInvalid, what, len(s), api.MaxNameLen)
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %s %q has a character that is not printable", api.ErrInvalid, what, s)
		}
	}
	return nil
}

// syncDir fsyncs a directory so a link or rename in it survives a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
