package envoy

import (
	"cmp"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Placeholders that stand for the site's paths in what the envoy sends.
const (
	phShard     = "<shard>"
	phWorkspace = "<workspace>"
	phWorkDir   = "<work-dir>"
	phSecret    = "<secret>"
	phHome      = "<envoy-home>"
)

// redactor replaces the site's own paths in text bound for the director
// with placeholders, so that a failure report says what went wrong without
// describing the site's file system (user names, mount points, where the
// key lies).
type redactor struct {
	pairs []redaction // longest path first, so a path inside another wins
}

type redaction struct{ path, placeholder string }

// newRedactor redacts the shard, the experiment's folder (the workspace),
// the work dir, the envoy's TLS files and the envoy's HOME, each as given
// and with its symbolic links resolved.
func newRedactor(cfg *Config, experimentDir string) *redactor {
	r := &redactor{}
	add := func(path, placeholder string) {
		if path == "" {
			return
		}
		for _, p := range []string{filepath.Clean(path), resolved(path)} {
			// "/" or a one-letter path would redact every slash.
			if len(p) > 2 {
				r.pairs = append(r.pairs, redaction{p, placeholder})
			}
		}
	}
	add(cfg.ShardDir, phShard)
	add(experimentDir, phWorkspace)
	add(cfg.WorkDir, phWorkDir)
	for _, s := range cfg.Secrets {
		if abs, err := filepath.Abs(s); err == nil {
			add(abs, phSecret)
		}
	}
	add(os.Getenv("HOME"), phHome)
	slices.SortStableFunc(r.pairs, func(a, b redaction) int { return cmp.Compare(len(b.path), len(a.path)) })
	return r
}

// resolved is path with its symbolic links resolved, or "" if that fails.
func resolved(path string) string {
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return p
}

// redact replaces every occurrence of a known path that ends where a path
// component ends ("/data/shard" in "/data/shard/x" or "/data/shard: no
// such file", not in "/data/shard2").
func (r *redactor) redact(s string) string {
	for _, p := range r.pairs {
		if !strings.Contains(s, p.path) {
			continue
		}
		var b strings.Builder
		for {
			i := strings.Index(s, p.path)
			if i < 0 {
				break
			}
			end := i + len(p.path)
			b.WriteString(s[:i])
			if !continues(s, end) {
				b.WriteString(p.placeholder)
			} else {
				b.WriteString(p.path)
			}
			s = s[end:]
		}
		b.WriteString(s)
		s = b.String()
	}
	return s
}

// continues reports whether s[i:] goes on with the path component before
// i: a file name character, or a dot followed by one (a dot ending a
// sentence does not count).
func continues(s string, i int) bool {
	if i == len(s) || !isPathChar(s[i]) {
		return false
	}
	return s[i] != '.' || i+1 < len(s) && isPathChar(s[i+1])
}

// isPathChar reports whether c may continue a file name component.
func isPathChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '+' || c >= 0x80
}
