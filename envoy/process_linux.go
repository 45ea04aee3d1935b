package envoy

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

// setSubreaper marks the process a child subreaper (Linux 3.4+); on failure
// orphans go to init as usual.
func setSubreaper() {
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
}

// signalMembers sends sig to every process of group pgid except its leader
// (pid pgid), as /proc lists them. A process forked meanwhile may be
// missed; the SIGKILL to the whole group that follows a stop catches it.
func signalMembers(pgid int, sig syscall.Signal) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == pgid {
			continue
		}
		if g, ok := processGroup(pid); ok && g == pgid {
			syscall.Kill(pid, sig)
		}
	}
}

// processGroup reads pid's process group from /proc/<pid>/stat, whose
// fields after the command name (which may hold spaces and parentheses, so
// the last ')' ends it) are state, ppid, pgrp.
func processGroup(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 3 {
		return 0, false
	}
	g, err := strconv.Atoi(string(f[2]))
	return g, err == nil
}
