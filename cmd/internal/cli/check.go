package cli

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fedplane/fedplane/api"
)

// Checks of flag values that more than one program takes. Each returns a
// UsageError naming the flag, so that a bad value exits 2 like an unknown
// flag does, rather than failing later with exit 1 and a message that does
// not say which flag was wrong.

// CheckHostPort checks an address flag: HOST:PORT with a numeric port. An
// empty HOST is allowed (":8003": every interface to listen on, this host
// to dial).
func CheckHostPort(flag, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Usagef("--%s %q: want HOST:PORT", flag, addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return Usagef("--%s %q: port %q is not a number from 0 to 65535", flag, addr, port)
	}
	return nil
}

// CheckName checks a name flag against the federation's name rule
// (api.ValidateName).
func CheckName(flag, name string) error {
	if err := api.ValidateName("--"+flag, name); err != nil {
		return &UsageError{Err: err}
	}
	return nil
}

// CheckShape checks a shape flag given as comma-separated dimensions (see
// TrimAll): no dimension may be empty ("28,,28" or a trailing comma), and
// each must be UTF-8 text to travel in a protobuf string.
func CheckShape(flag string, dims []string) error {
	for _, d := range TrimAll(dims) {
		if d == "" {
			return Usagef("--%s %q: a dimension is empty", flag, dims)
		}
		if !utf8.ValidString(d) {
			return Usagef("--%s: dimension %q is not UTF-8 text", flag, d)
		}
	}
	return nil
}

// CheckAddrs checks a flag that lists the addresses of director replicas,
// tried in order: at least one, each HOST:PORT as CheckHostPort wants, none
// empty ("a:1,,b:2" or a trailing comma) and none given twice. It returns
// the addresses with the spaces around them trimmed.
func CheckAddrs(flag string, addrs []string) ([]string, error) {
	addrs = TrimAll(addrs)
	list := strings.Join(addrs, ",")
	if len(addrs) == 0 || len(addrs) == 1 && addrs[0] == "" {
		return nil, Usagef("--%s is empty", flag)
	}
	for i, a := range addrs {
		if a == "" {
			return nil, Usagef("--%s %q: address %d of %d is empty", flag, list, i+1, len(addrs))
		}
		if err := CheckHostPort(flag, a); err != nil {
			return nil, err
		}
		if j := slices.Index(addrs[:i], a); j >= 0 {
			return nil, Usagef("--%s %q: %s is given twice (addresses %d and %d)", flag, list, a, j+1, i+1)
		}
	}
	return addrs, nil
}
