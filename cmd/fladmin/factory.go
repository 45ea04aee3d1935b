package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/pki"
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
	addr string
	// addrs are --addr's addresses, checked: the director's admin port, or
	// those of several replicas, tried in order.
	addrs   []string
	output  string
	timeout time.Duration
	tls     cli.TLSFlags

	stdout, stderr io.Writer
	// stdoutIsTerminal decides between a boxed table and tab-separated
	// lines, stderrIsTerminal whether progress is drawn. Tests set them.
	stdoutIsTerminal, stderrIsTerminal func() bool
	// user names the caller to a director without TLS.
	user func() string
	// answered is the address of --addr that took the last connection.
	answered atomic.Pointer[string]
}

func newFactory() *factory {
	f := &factory{
		stdout: os.Stdout,
		stderr: os.Stderr,
		user: func() string {
			if u, err := user.Current(); err == nil {
				return u.Username
			}
			return os.Getenv("USER")
		},
	}
	f.stdoutIsTerminal = func() bool { return isTerminal(f.stdout) }
	f.stderrIsTerminal = func() bool { return isTerminal(f.stderr) }
	return f
}

// isTerminal reports whether w is a terminal. This is fladmin's one
// terminal test: term.IsTerminal asks the terminal driver (isatty), where
// a check for a character device would also take /dev/null for one.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (f *factory) addFlags(root *cobra.Command) {
	addr := os.Getenv(addrEnv)
	if addr == "" {
		addr = defaultAddr
	}
	pf := root.PersistentFlags()
	pf.StringVar(&f.addr, "addr", addr, "the director's admin port (its --admin-listen), HOST:PORT; or several replicas' admin ports, comma-separated, tried in order (env "+addrEnv+")")
	pf.StringVarP(&f.output, "output", "o", outputTable, outputUsage)
	pf.DurationVar(&f.timeout, "timeout", defaultTimeout, "give up when the director sends nothing for this long")
	f.tls.AddPersistent(root, "your admin")
	f.tls.AddServerName(pf, "--addr")
	for flag, env := range map[string]string{"tls-ca": "FLADMIN_TLS_CA", "tls-cert": "FLADMIN_TLS_CERT", "tls-key": "FLADMIN_TLS_KEY", "tls-server-name": "FLADMIN_TLS_SERVER_NAME"} {
		if v := os.Getenv(env); v != "" {
			pf.Set(flag, v)
			pf.Lookup(flag).Changed = false
		}
		pf.Lookup(flag).Usage += " (env " + env + ")"
	}
}

func (f *factory) validate() error {
	switch f.output {
	case outputTable, outputJSON, outputYAML:
	default:
		return cli.Usagef("--output %q: want table, json or yaml", f.output)
	}
	if f.timeout <= 0 {
		return cli.Usagef("--timeout %v: must be positive", f.timeout)
	}
	addrs, err := cli.CheckAddrs("addr", strings.Split(f.addr, ","))
	if err != nil {
		return err
	}
	f.addrs = addrs
	return nil
}

// jobIDArg is the Args of a command that takes one JOB_ID: the full id or
// a prefix of at least api.MinIDPrefix characters, one word (it travels as
// a word of the command line the director parses).
func jobIDArg(cmd *cobra.Command, args []string) error {
	if err := cobra.ExactArgs(1)(cmd, args); err != nil {
		return err
	}
	id := args[0]
	if i := strings.IndexFunc(id, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return fmt.Errorf("JOB_ID %q has %q: an id is one word", id, id[i:i+1])
	}
	if len(id) < api.MinIDPrefix {
		return fmt.Errorf("JOB_ID %q is too short: give the id or at least its first %d characters", id, api.MinIDPrefix)
	}
	return nil
}

// client returns the admin client for the configured addresses, tried in
// order, speaking mutual TLS when the --tls-* flags are given: each
// address's certificate is checked against its own host unless
// --tls-server-name names another.
func (f *factory) client() (*adminproto.Client, error) {
	c := &adminproto.Client{Addr: f.addrs[0], Fallback: f.addrs[1:], Timeout: f.timeout}
	cfg, err := f.tls.Client()
	if err != nil {
		return nil, err
	}
	dial := new(net.Dialer).DialContext
	if cfg != nil {
		// Offering the admin port's protocol makes a gRPC port refuse
		// the handshake: see adminproto.ALPN.
		cfg.NextProtos = []string{adminproto.ALPN}
		dial = (&tls.Dialer{Config: cfg}).DialContext
	}
	c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err == nil {
			f.answered.Store(&addr)
		}
		return conn, err
	}
	return c, nil
}

// director is the address of the director that answered last: the one
// of --addr's that took the connection.
func (f *factory) director() string {
	if a := f.answered.Load(); a != nil {
		return *a
	}
	return strings.Join(f.addrs, ",")
}

// explain adds what to do to an error of the admin client that shows
// fladmin pointed at something other than the director's admin port, or
// with TLS where the port has none or without where it has.
func (f *factory) explain(err error) error {
	var wp *adminproto.WrongPortError
	if problem := pki.CertProblem(err); problem != "" {
		return fmt.Errorf("TLS certificate problem: %s (%w)", problem, err)
	}
	switch {
	case errors.As(err, &wp) && wp.Peer == adminproto.PeerGRPC:
		return fmt.Errorf("%w; fladmin talks to the director's admin port (director serve --admin-listen, default %s): fix --addr or %s", err, defaultAddr, addrEnv)
	case errors.As(err, &wp) && wp.Peer == adminproto.PeerTLS:
		return fmt.Errorf("%w; the director serves TLS there: give --tls-ca, --tls-cert and --tls-key (or FLADMIN_TLS_*), an admin certificate from \"director pki issue --kind admin\"", err)
	case errors.As(err, &wp) && wp.Peer == adminproto.PeerPlaintext:
		return fmt.Errorf("%w; the director serves that port without TLS: leave out --tls-ca, --tls-cert and --tls-key (and FLADMIN_TLS_*), or check --addr", err)
	case errors.Is(err, adminproto.ErrNoReply) && f.tls.CA == "":
		return fmt.Errorf("%w; if the director serves TLS, give --tls-ca, --tls-cert and --tls-key: it hangs up on a client without them", err)
	}
	return err
}

// request builds a request envelope for command, naming the user.
func (f *factory) request(command string) *adminproto.Message {
	req := adminproto.NewRequest(command)
	if req.Meta == nil {
		req.Meta = map[string]any{}
	}
	if u := f.user(); u != "" {
		req.Meta[api.MetaUser] = u
	}
	return req
}

// do sends a text command and returns the reply's meta, or an error if the
// director refused it. The meta's values stay raw JSON until a command
// decodes them into its own types (see adminproto.Meta).
func (f *factory) do(ctx context.Context, command string) (adminproto.Meta, error) {
	return f.doStream(ctx, command, nil)
}

// doStream is do with the meta keys that stream takes decoded by it as the
// reply arrives (see adminproto.MetaStreamer). What stream decoded must not
// be used if the director refused: the error says so.
func (f *factory) doStream(ctx context.Context, command string, stream adminproto.MetaStreamer) (adminproto.Meta, error) {
	c, err := f.client()
	if err != nil {
		return nil, err
	}
	reply, err := c.DoMeta(ctx, f.request(command), stream)
	if err != nil {
		return nil, f.explain(err)
	}
	return reply, refusal(reply)
}

// refusal turns a reply whose status is not ok into an error.
func refusal(reply adminproto.Meta) error {
	if s := reply.Status(); s != adminproto.StatusOK {
		info := reply.Info()
		if info == "" {
			info = "no reason given"
		}
		return &refusedError{status: s, info: info}
	}
	return nil
}

// refusedError is the director's answer refusing a command, as opposed to
// failing to get an answer at all.
type refusedError struct{ status, info string }

func (e *refusedError) Error() string {
	return fmt.Sprintf("director refused (%s): %s", e.status, e.info)
}

// listStream decodes the list under key in a reply's meta element by
// element as it arrives (see adminproto.MetaStreamer), calling each with the
// decoder positioned at one element. A null list has no elements.
type listStream struct {
	key  string
	each func(dec *json.Decoder) error
	seen bool
}

func (l *listStream) stream(k string, dec *json.Decoder) (bool, error) {
	if k != l.key {
		return false, nil
	}
	l.seen = true
	t, err := dec.Token()
	switch {
	case err != nil:
		return true, err
	case t == nil:
		return true, nil
	case t != json.Delim('['):
		return true, errors.New("not a list")
	}
	for dec.More() {
		if err := l.each(dec); err != nil {
			return true, err
		}
	}
	_, err = dec.Token()
	return true, err
}

// doList sends command and calls each for every element of the list under
// key in the reply, as the elements arrive.
func (f *factory) doList(ctx context.Context, command, key string, each func(dec *json.Decoder) error) error {
	l := &listStream{key: key, each: each}
	if _, err := f.doStream(ctx, command, l.stream); err != nil {
		return err
	}
	if !l.seen {
		return fmt.Errorf("reply meta has no %q", key)
	}
	return nil
}

// replyMeta returns the meta of an upload's or download's reply, or an
// error if the director refused.
func replyMeta(reply *adminproto.Message) (adminproto.Meta, error) {
	meta, err := adminproto.MetaOf(reply)
	if err != nil {
		return nil, err
	}
	return meta, refusal(meta)
}

// fmtTime formats a time for tables: local time, seconds, "-" when zero.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
