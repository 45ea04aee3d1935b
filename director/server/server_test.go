package server

import "testing"

func TestLoopbackRule(t *testing.T) {
	tests := []struct {
		grpc, admin string
		metrics     string
		insecure    bool
		ok          bool
	}{
		{"127.0.0.1:1", "127.0.0.1:2", "", false, true},
		{"[::1]:1", "localhost:2", "", false, true},
		{"0.0.0.0:1", "127.0.0.1:2", "", false, false},
		{"127.0.0.1:1", "10.0.0.1:2", "", false, false},
		{"0.0.0.0:1", "0.0.0.0:2", "", true, true},
		{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", false, true},
		{"127.0.0.1:1", "127.0.0.1:2", "0.0.0.0:3", false, false},
		{"127.0.0.1:1", "127.0.0.1:2", "0.0.0.0:3", true, true},
	}
	for _, tt := range tests {
		c := Config{GRPCListen: tt.grpc, AdminListen: tt.admin, MetricsListen: tt.metrics, Insecure: tt.insecure}
		if err := c.Check(); (err == nil) != tt.ok {
			t.Errorf("%s %s %q insecure=%v: got %v, want ok=%v", tt.grpc, tt.admin, tt.metrics, tt.insecure, err, tt.ok)
		}
	}
}
