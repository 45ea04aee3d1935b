package job

import "testing"

func TestFormatSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1000, "1000 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 + 512, "1 MiB"},
		{20 << 30, "20 GiB"},
		{25 << 30, "25 GiB"},
		{1<<63 - 1, "8 EiB"},
	}
	for _, tt := range tests {
		if got := formatSize(tt.n); got != tt.want {
			t.Errorf("formatSize(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{"job.json", ""},
		{"sub/", ""},
		{"a/b/c.txt", ""},
		{"..data", ""},
		{"résumé.txt", ""},
		{"", "is empty"},
		{"..", "escapes the job folder"},
		{"../", "escapes the job folder"},
		{"a/..", "escapes the job folder"},
		{"/a", "is an absolute path"},
		{`\a`, "contains a backslash"},
		{"c:a", "starts with a drive letter"},
		{"a\x00", "contains a NUL byte"},
		{"a\xff", "is not valid UTF-8"},
		{"./a", "is not a clean path"},
		{"a//", "is not a clean path"},
		{"a/./b", "is not a clean path"},
	}
	for _, tt := range tests {
		if got := checkName(tt.name); got != tt.want {
			t.Errorf("checkName(%q): got %q, want %q", tt.name, got, tt.want)
		}
	}
}
