package api

import "fmt"

// MaxNameLen bounds envoy, experiment and user names, which end up in
// certificates, file names and log lines.
const MaxNameLen = 128

// ValidateName accepts the names fedplane gives envoys, experiments and
// users: letters, digits and . _ - @, not starting with a dot, at most
// MaxNameLen bytes. what names the field in the error, which wraps
// ErrInvalid.
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", ErrInvalid, what, len(name), MaxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %s %q starts with a dot", ErrInvalid, what, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@'
		if !ok {
			return fmt.Errorf("%w: %s %q has %q; use letters, digits, '.', '_', '-' or '@'", ErrInvalid, what, name, r)
		}
	}
	return nil
}
