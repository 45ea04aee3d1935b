//go:build !unix

package openfl

import "net"

// rawReader is not used off Unix: gRPC reads tracked connections through
// a buffer of its own there (connread_unix.go).
type rawReader struct{}

func newRawReader(net.Conn) *rawReader { return nil }
