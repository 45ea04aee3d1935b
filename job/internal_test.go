package job

import (
	"reflect"
	"strings"
	"testing"
)

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

// TestManifestKeysMatchStructTags checks the hand-written key list of
// checkJSON against the json tags of Manifest, so a field added to one is
// never missing from the other: every tagged field, by dotted path, with
// the kind its Go type takes.
func TestManifestKeysMatchStructTags(t *testing.T) {
	want := map[string]jsonKind{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				t.Fatalf("field %s.%s has no json name", typ.Name(), f.Name)
			}
			path := name
			if prefix != "" {
				path = prefix + "." + name
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft == reflect.TypeFor[Duration]():
				want[path] = kindDuration
			case ft == reflect.TypeFor[KeepModels]():
				want[path] = kindKeepModels
			case ft.Kind() == reflect.Struct:
				want[path] = kindObject
				walk(path, ft)
			case ft.Kind() == reflect.String:
				want[path] = kindString
			case ft.Kind() == reflect.Int, ft.Kind() == reflect.Int64:
				want[path] = kindInt
			case ft.Kind() == reflect.Float64:
				want[path] = kindNumber
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
				want[path] = kindStrings
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				want[path] = kindObjects
				walk(path+"[]", ft.Elem())
			case ft.Kind() == reflect.Bool:
				want[path] = kindBool
			default:
				t.Fatalf("field %q has type %v, which checkJSON has no kind for", path, ft)
			}
		}
	}
	walk("", reflect.TypeFor[Manifest]())
	if !reflect.DeepEqual(manifestKeys, want) {
		for k, v := range want {
			if got, ok := manifestKeys[k]; !ok || got != v {
				t.Errorf("key %q: manifestKeys has %v (listed: %v), the struct tags say %v", k, got, ok, v)
			}
		}
		for k := range manifestKeys {
			if _, ok := want[k]; !ok {
				t.Errorf("key %q is in manifestKeys but no struct field has that tag", k)
			}
		}
	}
}
