package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// Defaults of the global flags.
const (
	defaultAddr    = "127.0.0.1:8003"
	defaultTimeout = 30 * time.Second
	addrEnv        = "FLADMIN_ADDR"
)

// factory holds the global flags and creates what subcommands need, lazily,
// so `--help` never dials.
type factory struct {
	addr    string
	output  string
	timeout time.Duration
	tls     cli.TLSFlags

	stdout, stderr io.Writer
	// stderrIsTerminal decides whether progress is drawn.
	stderrIsTerminal func() bool
	// user names the caller to a director without TLS.
	user func() string
}

func newFactory() *factory {
	return &factory{
		stdout: os.Stdout,
		stderr: os.Stderr,
		stderrIsTerminal: func() bool {
			fi, err := os.Stderr.Stat()
			return err == nil && fi.Mode()&os.ModeCharDevice != 0
		},
		user: func() string {
			if u, err := user.Current(); err == nil {
				return u.Username
			}
			return os.Getenv("USER")
		},
	}
}

func (f *factory) addFlags(root *cobra.Command) {
	addr := os.Getenv(addrEnv)
	if addr == "" {
		addr = defaultAddr
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.addr, "addr", addr, "director admin address HOST:PORT (env "+addrEnv+")")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", defaultTimeout, "give up when the director sends nothing for this long")
	f.tls.AddPersistent(root, "your admin")
	for flag, env := range map[string]string{"tls-ca": "FLADMIN_TLS_CA", "tls-cert": "FLADMIN_TLS_CERT", "tls-key": "FLADMIN_TLS_KEY"} {
		if v := os.Getenv(env); v != "" {
			pf.Set(flag, v)
			pf.Lookup(flag).Changed = false
		}
		pf.Lookup(flag).Usage += " (env " + env + ")"
	}
}

func (f *factory) validate() error {
	if f.output != "table" && f.output != "json" {
		return cli.Usagef("--output %q: want table or json", f.output)
	}
	if f.timeout <= 0 {
		return cli.Usagef("--timeout %v: must be positive", f.timeout)
	}
	if f.addr == "" {
		return cli.Usagef("--addr is empty")
	}
	return nil
}

// client returns the admin client for the configured address, speaking
// mutual TLS when the --tls-* flags are given.
func (f *factory) client() (*adminproto.Client, error) {
	c := &adminproto.Client{Addr: f.addr, Timeout: f.timeout}
	cfg, err := f.tls.Client("")
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		d := &tls.Dialer{Config: cfg}
		c.Dial = d.DialContext
	}
	return c, nil
}

// request builds a request envelope for command, naming the user.
func (f *factory) request(command string) *adminproto.Message {
	req := adminproto.NewRequest(command)
	if req.Meta == nil {
		req.Meta = map[string]any{}
	}
	if u := f.user(); u != "" {
		req.Meta["user"] = u
	}
	return req
}

// do sends a text command and returns the reply, or an error if the director
// refused it.
func (f *factory) do(ctx context.Context, command string) (*adminproto.Message, error) {
	c, err := f.client()
	if err != nil {
		return nil, err
	}
	reply, err := c.Do(ctx, f.request(command))
	if err != nil {
		return nil, err
	}
	return reply, refusal(reply)
}

// refusal turns a reply whose status is not ok into an error.
func refusal(reply *adminproto.Message) error {
	if s := reply.Status(); s != adminproto.StatusOK {
		info := reply.Info()
		if info == "" {
			info = "no reason given"
		}
		return fmt.Errorf("director refused (%s): %s", s, info)
	}
	return nil
}

// metaInto decodes reply.Meta[key] into v.
func metaInto(reply *adminproto.Message, key string, v any) error {
	raw, ok := reply.Meta[key]
	if !ok {
		return fmt.Errorf("director reply has no %q", key)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("director reply %q: %w", key, err)
	}
	return nil
}

// printMetaList prints the list reply.Meta[key] as JSON, objects unchanged
// (the director's stable lowerCamel keys), and [] rather than null when empty.
func (f *factory) printMetaList(reply *adminproto.Message, key string) error {
	var raw []json.RawMessage
	if err := metaInto(reply, key, &raw); err != nil {
		return err
	}
	if raw == nil {
		raw = []json.RawMessage{}
	}
	return f.printJSON(raw)
}

// printJSONLine writes v as one line of JSON.
func (f *factory) printJSONLine(v any) error {
	return json.NewEncoder(f.stdout).Encode(v)
}

// printJSON writes v as indented JSON.
func (f *factory) printJSON(v any) error {
	enc := json.NewEncoder(f.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes a header and rows with tablewriter.
func (f *factory) printTable(header []string, rows [][]string) error {
	t := tablewriter.NewWriter(f.stdout)
	t.Header(header)
	if err := t.Bulk(rows); err != nil {
		return err
	}
	return t.Render()
}

// fmtTime formats a time for tables: local time, seconds, "-" when zero.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
