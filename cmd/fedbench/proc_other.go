//go:build !linux

package main

import "syscall"

// childAttr has nothing to add where there is no parent-death signal;
// fedbench still stops its directors on every ordinary exit.
func childAttr() *syscall.SysProcAttr { return nil }

// flushDirty does nothing here; phases may pay for earlier writeback.
func flushDirty() {}
