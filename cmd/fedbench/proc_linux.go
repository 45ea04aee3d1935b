package main

import "syscall"

// childAttr makes a started director die with fedbench, however fedbench
// ends.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// flushDirty writes every dirty page to disk, so that a timed phase pays for
// its own writes and not for the writeback of an earlier one.
func flushDirty() { syscall.Sync() }
