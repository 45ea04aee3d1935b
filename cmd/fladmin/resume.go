package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/fedplane/fedplane/adminproto"
)

// A transfer (submit-job, download-job) cut by the network is tried again
// this many times in all, after a pause that doubles from transferPause,
// and resumes from the bytes the other side holds (README "Transfers that
// resume").
const (
	transferAttempts = 6
	transferPause    = 250 * time.Millisecond
)

// cutOff reports whether err is a connection to the director that broke
// or could not be made, which another attempt may get past: not a reply,
// a certificate, a wrong port or a checksum, which it would not.
func cutOff(ctx context.Context, err error) bool {
	var wp *adminproto.WrongPortError
	if ctx.Err() != nil || errors.As(err, &wp) || errors.Is(err, adminproto.ErrChecksum) || errors.Is(err, adminproto.ErrFooter) {
		return false
	}
	for _, e := range []error{io.ErrUnexpectedEOF, io.EOF, syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.EPIPE, os.ErrDeadlineExceeded, adminproto.ErrNoReply} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// retryTransfer reports whether attempt (counted from 1), which failed
// with err, is to be tried again, and then waits before the next one,
// saying so on stderr.
func (f *factory) retryTransfer(ctx context.Context, what string, attempt int, held int64, err error) bool {
	if attempt >= transferAttempts || !cutOff(ctx, err) {
		return false
	}
	pause := transferPause << (attempt - 1)
	fmt.Fprintf(f.stderr, "%s cut off after %d bytes held (%v); resuming in %v\n", what, held, err, pause)
	t := time.NewTimer(pause)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
