//go:build !linux

package envoy

import "syscall"

// setSubreaper does nothing where there is no child subreaper: orphans go
// to init, which reaps them.
func setSubreaper() {}

// signalMembers sends sig to the whole group: without /proc the leader
// cannot be told apart, and there is no bubblewrap to spare either.
func signalMembers(pgid int, sig syscall.Signal) {
	syscall.Kill(-pgid, sig)
}

// killUser does nothing without /proc to find the user's processes.
func killUser(uint32) {}
