package cli

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestCheckAddrs(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []string
		err  string // in the usage error; "" for none
	}{
		{"one", []string{"127.0.0.1:8003"}, []string{"127.0.0.1:8003"}, ""},
		{"several in order", []string{"b.example.org:8003", "a.example.org:8003", "[::1]:8003"}, []string{"b.example.org:8003", "a.example.org:8003", "[::1]:8003"}, ""},
		{"spaces trimmed", []string{" a:1", "b:2 "}, []string{"a:1", "b:2"}, ""},
		{"this host", []string{":8003"}, []string{":8003"}, ""},
		{"none", nil, nil, "--addr is empty"},
		{"empty", []string{""}, nil, "--addr is empty"},
		{"empty item", []string{"a:1", "", "b:2"}, nil, `--addr "a:1,,b:2": address 2 of 3 is empty`},
		{"trailing comma", []string{"a:1", ""}, nil, "address 2 of 2 is empty"},
		{"no port", []string{"a:1", "b"}, nil, `--addr "b": want HOST:PORT`},
		{"bad port", []string{"a:1", "b:http"}, nil, `--addr "b:http": port "http" is not a number`},
		{"duplicate", []string{"a:1", "b:2", " a:1"}, nil, `--addr "a:1,b:2,a:1": a:1 is given twice (addresses 1 and 3)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CheckAddrs("addr", tt.in)
			if tt.err == "" {
				if err != nil || !slices.Equal(got, tt.want) {
					t.Fatalf("got %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("got %v; want a usage error with %q", err, tt.err)
			}
		})
	}
}
