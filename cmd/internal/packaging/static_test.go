package packaging

import (
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestStaticBinaries checks that a CGO_ENABLED=0 build needs no dynamic
// loader and no shared library, which is what lets the image run on
// distroless's static base (no libc). A dependency that needs cgo would
// fail the build; one that pulls the loader back in fails here.
func TestStaticBinaries(t *testing.T) {
	for _, b := range binaries {
		t.Run(b, func(t *testing.T) {
			f, err := elf.Open(filepath.Join(binDir, b))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
					t.Errorf("%s has a %v program header: dynamically linked, want static", b, p.Type)
				}
			}
			libs, err := f.ImportedLibraries()
			if err != nil {
				t.Fatal(err)
			}
			if len(libs) > 0 {
				t.Errorf("%s needs shared libraries %v, want none", b, libs)
			}
		})
	}
}

// TestMakefileBinaries keeps this package's list of programs the
// Makefile's, so a new program is tested (and shipped) here too.
func TestMakefileBinaries(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		name, value, ok := strings.Cut(line, ":=")
		if !ok || strings.TrimSpace(name) != "BINARIES" {
			continue
		}
		if got := strings.Fields(value); !slices.Equal(got, binaries) {
			t.Errorf("Makefile BINARIES = %v, want %v", got, binaries)
		}
		return
	}
	t.Fatal("Makefile has no BINARIES := line")
}
