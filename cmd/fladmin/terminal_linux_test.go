package main

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// TestIsTerminalPTY checks the terminal test against a real terminal: the
// follower side of a pseudo-terminal.
func TestIsTerminalPTY(t *testing.T) {
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	var unlock int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Skipf("unlock pseudo-terminal: %v", errno)
	}
	var n uint32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, ptmx.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); errno != 0 {
		t.Skipf("pseudo-terminal number: %v", errno)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	defer pts.Close()
	if !isTerminal(pts) {
		t.Fatal("a pseudo-terminal: got not a terminal")
	}
	f := newFactory()
	f.stdout, f.stderr = pts, pts
	if !f.stdoutIsTerminal() || !f.stderrIsTerminal() {
		t.Fatal("factory on a pseudo-terminal: got not a terminal")
	}
}
