package envoy

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
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

// killUser kills every process whose real or effective user is uid (the
// run-as user of a run that ended), and reaps those that are the envoy's
// (a subreaper's) children: a command that started a session of its own
// left the group the envoy kills, and must not outlive its run either, to
// reach into the next run's folders as the same user. It never kills root
// or the envoy's own user. It repeats while it finds some, a few times, as
// a dying process may have forked.
func killUser(uid uint32) {
	if uid == 0 || int(uid) == os.Getuid() {
		return
	}
	for range 5 {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return
		}
		var killed []int
		for _, d := range entries {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			if owned(pid, uid) && syscall.Kill(pid, syscall.SIGKILL) == nil {
				killed = append(killed, pid)
			}
		}
		if len(killed) == 0 {
			return
		}
		time.Sleep(reapPoll)
		// Reap only what was killed: another command's exit status is
		// its exec.Cmd's.
		for _, pid := range killed {
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
	}
}

// owned reports whether pid's real or effective user is uid, from the
// "Uid:" line of /proc/<pid>/status (real, effective, saved, filesystem).
func owned(pid int, uid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("Uid:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		want := strconv.FormatUint(uint64(uid), 10)
		return len(f) >= 2 && (string(f[0]) == want || string(f[1]) == want)
	}
	return false
}
