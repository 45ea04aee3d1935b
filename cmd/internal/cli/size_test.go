package cli

import "testing"

func TestByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"10GiB", 10 << 30, true}, {"10g", 10 << 30, true}, {"512MiB", 512 << 20, true},
		{"1.5k", 1536, true}, {"123", 123, true}, {" 2 MB ", 2 << 20, true},
		{"", 0, false}, {"-1", 0, false}, {"ten", 0, false}, {"1XB", 0, false}, {"99999999TiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var b ByteSize
			err := b.Set(tt.in)
			if (err == nil) != tt.ok || (tt.ok && int64(b) != tt.want) {
				t.Fatalf("got %d, %v; want %d, ok=%v", b, err, tt.want, tt.ok)
			}
		})
	}
	b := ByteSize(10 << 30)
	if got := b.String(); got != "10GiB" {
		t.Fatalf("String: got %q, want 10GiB", got)
	}
}
