package packaging

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/director/server"
	"github.com/fedplane/fedplane/envoy"
)

// unitsDir holds the systemd units fedplane ships as examples.
var unitsDir = filepath.Join(root, "examples", "systemd")

// installedBin is where the units expect the binaries (make build, then
// install them there, as examples/systemd/README.md says).
const installedBin = "/usr/local/bin/"

// unitCase is what a shipped unit must be.
type unitCase struct {
	file       string
	binary     string // ExecStart's program, under installedBin
	subcommand string
	// require are directives the unit must set to exactly this value
	// (among the values it gives the key).
	require []string
	// forbid are keys the unit must not set: each breaks what the program
	// does (the unit's comments say how).
	forbid []string
	// minStop is the least TimeoutStopSec that lets the program stop
	// gracefully before systemd's SIGKILL.
	minStop time.Duration
	// maxExposure is the most `systemd-analyze security` may rate the unit
	// (0 is best, 10 worst): hardening that is dropped shows here.
	maxExposure float64
}

var unitCases = []unitCase{
	{
		file: "fedplane-director.service", binary: "director", subcommand: "serve",
		require: []string{
			"DynamicUser=yes", "StateDirectory=fedplane", "ConfigurationDirectory=fedplane",
			"Restart=on-failure", "RestartPreventExitStatus=2", "KillSignal=SIGTERM",
			"CapabilityBoundingSet=", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
			"PrivateTmp=yes", "PrivateDevices=yes", "ProtectKernelTunables=yes",
			"ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
			"RestrictNamespaces=yes", "LockPersonality=yes", "MemoryDenyWriteExecute=yes",
			"SystemCallFilter=@system-service", "RestrictAddressFamilies=AF_INET AF_INET6",
		},
		// The director stops RPCs within its grace, then closes the store.
		minStop:     4 * server.DefaultStopGrace,
		maxExposure: 1.5,
	},
	{
		file: "fedplane-envoy.service", binary: "envoy", subcommand: "start",
		require: []string{
			"StateDirectory=fedplane-envoy", "ConfigurationDirectory=fedplane",
			"Restart=on-failure", "RestartPreventExitStatus=2", "KillSignal=SIGTERM",
			// SIGTERM to the envoy alone: it stops its training command.
			"KillMode=mixed",
			"CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN CAP_DAC_OVERRIDE CAP_KILL",
			"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
			"PrivateDevices=yes", "ProtectKernelModules=yes", "ProtectControlGroups=yes",
			"LockPersonality=yes", "ReadOnlyPaths=/srv/data/shard",
			// bubblewrap's namespaces and mounts, for --sandbox.
			"RestrictNamespaces=user mnt pid net ipc uts cgroup", "SystemCallFilter=@system-service @mount",
		},
		forbid: []string{
			// Mounts over /proc: bubblewrap then cannot mount its own.
			"ProtectKernelTunables", "ProtectKernelLogs", "ProtectProc", "ProcSubset",
			// Inherited by training commands, whose JITs need W+X memory.
			"MemoryDenyWriteExecute",
			// --run-as switches to a real user.
			"PrivateUsers", "DynamicUser", "User",
		},
		// The envoy gives its training command --kill-grace between
		// SIGTERM and SIGKILL, then reports and exits.
		minStop:     2 * envoy.DefaultKillGrace,
		maxExposure: 4.5,
	},
}

// unit is a unit file's directives: "Section.Key" to its values in order.
type unit map[string][]string

// parseUnit reads a unit file. It takes the subset of systemd's syntax the
// shipped units use and refuses the rest (a continued line), so that a
// test never reads a unit otherwise than systemd does.
func parseUnit(tb testing.TB, path string) unit {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	u := unit{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case strings.HasSuffix(line, `\`):
			tb.Fatalf("%s:%d: a continued line; keep each directive on one line", path, n)
		case line[0] == '[':
			section = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || section == "" {
			tb.Fatalf("%s:%d: %q is not a directive of a section", path, n, line)
		}
		key := section + "." + strings.TrimSpace(k)
		u[key] = append(u[key], strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return u
}

// one returns the single value of key, failing if it has none or several.
func (u unit) one(tb testing.TB, key string) string {
	tb.Helper()
	if len(u[key]) != 1 {
		tb.Fatalf("%s: %d values %q, want one", key, len(u[key]), u[key])
	}
	return u[key][0]
}

// expandSpecifiers replaces the systemd specifiers the units use with what
// systemd gives a system service, and fails on any other: the test must
// not run a command line systemd would not.
func expandSpecifiers(tb testing.TB, arg, unitName string) string {
	tb.Helper()
	var b strings.Builder
	for i := 0; i < len(arg); i++ {
		if arg[i] != '%' {
			b.WriteByte(arg[i])
			continue
		}
		if i++; i == len(arg) {
			tb.Fatalf("ExecStart argument %q ends in %%", arg)
		}
		switch arg[i] {
		case 'S':
			b.WriteString("/var/lib")
		case 'E':
			b.WriteString("/etc")
		case 'd':
			b.WriteString("/run/credentials/" + unitName)
		case '%':
			b.WriteByte('%')
		default:
			tb.Fatalf("ExecStart argument %q: specifier %%%c is not one this test knows; add it", arg, arg[i])
		}
	}
	return b.String()
}

// TestSystemdUnits checks each shipped unit's hardening and stop, and that
// its ExecStart still parses: the real binary runs with the unit's
// arguments plus --help, which exits 2 on a flag it does not know (renamed,
// removed) or a value it refuses.
func TestSystemdUnits(t *testing.T) {
	for _, tt := range unitCases {
		t.Run(tt.file, func(t *testing.T) {
			u := parseUnit(t, filepath.Join(unitsDir, tt.file))
			for _, r := range tt.require {
				k, v, _ := strings.Cut(r, "=")
				if got := u["Service."+k]; !slices.Contains(got, v) {
					t.Errorf("%s: got %q, want %q among them", k, got, v)
				}
			}
			for _, k := range tt.forbid {
				if got, ok := u["Service."+k]; ok {
					t.Errorf("%s=%q is set; the unit must not set it", k, got)
				}
			}
			if got := u.one(t, "Install.WantedBy"); got != "multi-user.target" {
				t.Errorf("WantedBy=%s, want multi-user.target", got)
			}
			stop, err := time.ParseDuration(u.one(t, "Service.TimeoutStopSec"))
			if err != nil {
				t.Fatalf("TimeoutStopSec: %v", err)
			}
			if stop < tt.minStop {
				t.Errorf("TimeoutStopSec=%v, want at least %v for a graceful stop", stop, tt.minStop)
			}

			argv := strings.Fields(u.one(t, "Service.ExecStart"))
			if strings.ContainsAny(u.one(t, "Service.ExecStart"), `"'\$`) {
				t.Fatalf("ExecStart %q quotes, escapes or expands variables; this test splits it on spaces", argv)
			}
			if want := installedBin + tt.binary; argv[0] != want || len(argv) < 2 || argv[1] != tt.subcommand {
				t.Fatalf("ExecStart %q, want %s %s ...", argv, want, tt.subcommand)
			}
			args := make([]string, 0, len(argv))
			for i, a := range argv[1:] {
				args = append(args, expandSpecifiers(t, a, tt.file))
				// The config file the unit reads is one examples/ ships.
				if a == "--config" && i+2 < len(argv) {
					name := filepath.Base(argv[i+2])
					if _, err := os.Stat(filepath.Join(root, "examples", name)); err != nil {
						t.Errorf("ExecStart reads --config %s, but examples/ has no %s: %v", argv[i+2], name, err)
					}
				}
			}
			cmd := exec.Command(filepath.Join(binDir, tt.binary), append(args, "--help")...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s --help: %v\n%s", tt.binary, strings.Join(args, " "), err, out)
			}
		})
	}
}

// exposureRE finds the overall rating in `systemd-analyze security`'s
// report.
var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: ([0-9]+\.[0-9]+)`)

// TestSystemdAnalyze runs systemd's own checks on copies of the units whose
// ExecStart names the binaries TestMain built (verify fails on a program
// that does not exist): `systemd-analyze verify` must say nothing at all
// (it exits 0 on an unknown key or a value it ignores, and only says so),
// and `systemd-analyze security --offline=yes` must rate each unit no worse
// than it does now.
func TestSystemdAnalyze(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	dir := t.TempDir()
	var paths []string
	for _, tt := range unitCases {
		b, err := os.ReadFile(filepath.Join(unitsDir, tt.file))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(b, []byte("ExecStart="+installedBin)) {
			t.Fatalf("%s: no ExecStart=%s...", tt.file, installedBin)
		}
		b = bytes.ReplaceAll(b, []byte("ExecStart="+installedBin), []byte("ExecStart="+binDir+string(filepath.Separator)))
		path := filepath.Join(dir, tt.file)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}

	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v, want no complaint:\n%s", err, out)
	}

	for i, tt := range unitCases {
		t.Run(tt.file, func(t *testing.T) {
			out, err := exec.Command(analyze, "security", "--offline=yes", "--no-pager", paths[i]).CombinedOutput()
			if err != nil {
				t.Fatalf("systemd-analyze security: %v\n%s", err, out)
			}
			m := exposureRE.FindSubmatch(out)
			if m == nil {
				t.Fatalf("systemd-analyze security printed no overall exposure level:\n%s", out)
			}
			got, err := strconv.ParseFloat(string(m[1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: exposure %.1f (systemd-analyze security --offline=yes)", tt.file, got)
			if got > tt.maxExposure {
				t.Errorf("exposure %.1f, want at most %.1f: hardening was dropped\n%s", got, tt.maxExposure, out)
			}
		})
	}
}
