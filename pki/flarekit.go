package pki

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fedplane/fedplane/api"
)

// The admin startup kit of NVIDIA FLARE 2.6, as its provisioning writes it
// and its admin console (nvflare.fuel.hci.tools.admin) and FLARE API
// session (new_secure_session) read it: a kit folder holding startup/ with
// fed_admin.json, the admin's certificate and key and the root CA, and
// transfer/, where uploads come from and downloads land.
const (
	FlareStartupDir   = "startup"
	FlareTransferDir  = "transfer"
	FlareAdminConfig  = "fed_admin.json"
	FlareClientCert   = "client.crt"
	FlareClientKey    = "client.key"
	FlareRootCA       = "rootCA.pem"
	FlareAdminScript  = "fl_admin.sh"
	flareOverseerPath = "nvflare.ha.dummy_overseer_agent.DummyOverseerAgent"
)

// FlareKitOptions say where FLARE's admin client finds the director.
type FlareKitOptions struct {
	Name      string // the admin's certificate in the CA's folder
	AdminHost string // the director's admin host, as the admin dials it
	AdminPort int    // the director's admin port
	// FLPort is the director's gRPC port. FLARE's kit names both ports
	// (sp_end_point is host:fl_port:admin_port); its admin client uses
	// only the admin port.
	FLPort int
}

// WriteFlareAdminKit writes FLARE 2.6's admin startup kit for admin
// o.Name, whose certificate and key Issue wrote in caDir, into kitDir
// (created if missing): startup/fed_admin.json naming the director's admin
// host and port, startup/client.crt, client.key (mode 0600) and
// rootCA.pem, startup/fl_admin.sh, and an empty transfer/. It refuses to
// replace existing files. The admin signs job folders with its key only
// if it is RSA (IssueOptions.KeyType).
func WriteFlareAdminKit(caDir, kitDir string, o FlareKitOptions) error {
	if err := CheckFlareKit(o); err != nil {
		return err
	}
	cert, err := os.ReadFile(filepath.Join(caDir, o.Name+".crt"))
	if err != nil {
		return fmt.Errorf("read the admin's certificate: %w", err)
	}
	key, err := os.ReadFile(filepath.Join(caDir, o.Name+".key"))
	if err != nil {
		return fmt.Errorf("read the admin's key: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(caDir, CACertFile))
	if err != nil {
		return fmt.Errorf("read the CA certificate: %w", err)
	}
	config := map[string]any{
		"format_version": 1,
		"admin": map[string]any{
			"with_file_transfer": true,
			"upload_dir":         FlareTransferDir,
			"download_dir":       FlareTransferDir,
			"with_login":         true,
			"with_ssl":           true,
			"cred_type":          "cert",
			"client_key":         FlareClientKey,
			"client_cert":        FlareClientCert,
			"ca_cert":            FlareRootCA,
			"prompt":             "> ",
			"overseer_agent": map[string]any{
				"path": flareOverseerPath,
				"args": map[string]any{
					"sp_end_point": o.AdminHost + ":" + strconv.Itoa(o.FLPort) + ":" + strconv.Itoa(o.AdminPort),
				},
			},
		},
	}
	configJSON, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return err
	}
	script := "#!/usr/bin/env bash\n" +
		"# Starts NVIDIA FLARE's admin console against the fedplane director named in fed_admin.json.\n" +
		"DIR=\"$( cd \"$( dirname \"${BASH_SOURCE[0]}\" )\" >/dev/null 2>&1 && pwd )\"\n" +
		"mkdir -p \"$DIR/../" + FlareTransferDir + "\"\n" +
		"python3 -m nvflare.fuel.hci.tools.admin -m \"$DIR/..\" -s " + FlareAdminConfig + "\n"

	startup := filepath.Join(kitDir, FlareStartupDir)
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FlareClientKey, key, 0o600},
		{FlareClientCert, cert, 0o644},
		{FlareRootCA, ca, 0o644},
		{FlareAdminConfig, append(configJSON, '\n'), 0o644},
		{FlareAdminScript, []byte(script), 0o755},
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(startup, f.name))
	}
	if err := refuseExisting(paths...); err != nil {
		return err
	}
	if err := os.MkdirAll(startup, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(kitDir, FlareTransferDir), 0o700); err != nil {
		return err
	}
	for i, f := range files {
		if err := writeNew(paths[i], f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// CheckFlareKit checks o before anything is written; errors wrap
// api.ErrInvalid.
func CheckFlareKit(o FlareKitOptions) error {
	if err := api.ValidateName("certificate name", o.Name); err != nil {
		return err
	}
	if err := checkHost(o.AdminHost); err != nil {
		return err
	}
	if strings.HasPrefix(o.AdminHost, "*") {
		return fmt.Errorf("%w: admin host %q is a wildcard; give the host the admin dials", api.ErrInvalid, o.AdminHost)
	}
	if ip := net.ParseIP(o.AdminHost); ip != nil && ip.To4() == nil {
		// FLARE splits sp_end_point at ':', so an IPv6 address cannot be
		// written in it.
		return fmt.Errorf("%w: admin host %s: FLARE's kit cannot name an IPv6 address; give a DNS name", api.ErrInvalid, o.AdminHost)
	}
	for _, p := range []struct {
		what string
		port int
	}{{"admin port", o.AdminPort}, {"fl port", o.FLPort}} {
		if p.port < 1 || p.port > 65535 {
			return fmt.Errorf("%w: %s %d: want 1 to 65535", api.ErrInvalid, p.what, p.port)
		}
	}
	return nil
}
