package api

import "fmt"

// MaxNameLen bounds envoy, experiment and user names, which end up in
// certificates, file names and log lines.
const MaxNameLen = 128

// ValidateName accepts the names fedplane gives envoys, experiments and
// users: letters, digits and . _ - @, not starting with a dot, at most
// MaxNameLen bytes. what names the field in the error, which wraps
// ErrInvalid; its message is the rule broken, without the kind.
func ValidateName(what, name string) error {
	if name == "" {
		return nameErrorf("%s is empty", what)
	}
	if len(name) > MaxNameLen {
		return nameErrorf("%s is %d bytes long, at most %d allowed", what, len(name), MaxNameLen)
	}
	if name[0] == '.' {
		return nameErrorf("%s %q starts with a dot", what, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@'
		if !ok {
			return nameErrorf("%s %q has %q; use letters, digits, '.', '_', '-' or '@'", what, name, r)
		}
	}
	return nil
}

// nameError is a broken name rule: of kind ErrInvalid, said plainly.
type nameError struct{ msg string }

func (e *nameError) Error() string { return e.msg }
func (e *nameError) Unwrap() error { return ErrInvalid }

func nameErrorf(format string, args ...any) error {
	return &nameError{msg: fmt.Sprintf(format, args...)}
}
