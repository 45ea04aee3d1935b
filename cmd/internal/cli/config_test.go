package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		args    []string
		wantErr string
		want    func(t *testing.T, addr string, shape []string, period time.Duration)
	}{
		{
			name: "file sets unset flags",
			yaml: "addr: 0.0.0.0:1\nshape: [\"1\", \"2\"]\nperiod: 3s\n",
			want: func(t *testing.T, addr string, shape []string, period time.Duration) {
				if addr != "0.0.0.0:1" || !reflect.DeepEqual(shape, []string{"1", "2"}) || period != 3*time.Second {
					t.Fatalf("got %q %v %v", addr, shape, period)
				}
			},
		},
		{
			name: "flags win",
			yaml: "addr: 0.0.0.0:1\nshape: 4,5\n",
			args: []string{"--addr", "127.0.0.1:2"},
			want: func(t *testing.T, addr string, shape []string, _ time.Duration) {
				if addr != "127.0.0.1:2" || !reflect.DeepEqual(shape, []string{"4", "5"}) {
					t.Fatalf("got %q %v", addr, shape)
				}
			},
		},
		{name: "empty file", yaml: "", want: func(t *testing.T, addr string, _ []string, _ time.Duration) {
			if addr != "def" {
				t.Fatalf("got %q, want default", addr)
			}
		}},
		{name: "unknown key", yaml: "adr: x\n", wantErr: `unknown key "adr"`},
		{name: "forbidden key", yaml: "config: x\n", wantErr: `unknown key "config"`},
		{name: "bad value", yaml: "period: soon\n", wantErr: `key "period"`},
		{name: "list for scalar", yaml: "addr: [a, b]\n", wantErr: "not a list"},
		{name: "map value", yaml: "addr: {a: b}\n", wantErr: "want a value or a list"},
		{name: "not yaml", yaml: "addr: [\n", wantErr: "config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
			addr := fs.String("addr", "def", "")
			shape := fs.StringSlice("shape", nil, "")
			period := fs.Duration("period", time.Second, "")
			fs.String("config", "", "")
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "c.yaml")
			os.WriteFile(path, []byte(tt.yaml), 0o600)
			err := LoadConfig(fs, path, "config")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want(t, *addr, *shape, *period)
		})
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	err := LoadConfig(fs, filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("got %v, want error naming the file", err)
	}
}

func TestNewLogger(t *testing.T) {
	tests := []struct {
		format, level string
		ok            bool
	}{
		{"text", "info", true}, {"json", "debug", true}, {"text", "WARN", true},
		{"xml", "info", false}, {"text", "loud", false},
	}
	for _, tt := range tests {
		_, err := NewLogger(os.Stderr, tt.format, tt.level)
		if (err == nil) != tt.ok {
			t.Errorf("NewLogger(%q, %q): got %v, want ok=%v", tt.format, tt.level, err, tt.ok)
		}
	}
}
