package envoy

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Permission bits of access checks, as in a file mode's "other" triplet.
const (
	permRead  = 4
	permWrite = 2
	permExec  = 1
)

// account is the user a training command runs as (Config.RunAs).
type account struct {
	name     string
	uid, gid uint32
	groups   []uint32 // supplementary groups, as /etc/group lists them
}

// lookupAccount resolves a user name or a numeric uid. Both must be known
// to the system: a uid without an entry has no group to run with.
func lookupAccount(s string) (*account, error) {
	var (
		u   *user.User
		err error
	)
	if _, nerr := strconv.ParseUint(s, 10, 32); nerr == nil {
		u, err = user.LookupId(s)
	} else {
		u, err = user.Lookup(s)
	}
	if err != nil {
		return nil, fmt.Errorf("run as %q: %w", s, err)
	}
	a := &account{name: u.Username}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("run as %q: %w", s, err)
	}
	a.uid, a.gid = uint32(uid), uint32(gid)
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("run as %q: groups: %w", s, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("run as %q: group %q: %w", s, g, err)
		}
		if !slices.Contains(a.groups, uint32(n)) {
			a.groups = append(a.groups, uint32(n))
		}
	}
	return a, nil
}

func (a *account) String() string { return fmt.Sprintf("%s (uid %d)", a.name, a.uid) }

// credential is what the training command's process runs with: the
// account's uid, gid and supplementary groups, and none of the envoy's.
func (a *account) credential() *syscall.Credential {
	return &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: slices.Clone(a.groups)}
}

// may reports whether the account has the permission bits want on a file
// with the given stat, by its mode bits (ACLs are not consulted).
func (a *account) may(fi fs.FileInfo, want uint32) bool {
	if a.uid == 0 {
		return true
	}
	perm := uint32(fi.Mode().Perm())
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return false
	case st.Uid == a.uid:
		return perm>>6&want == want
	case st.Gid == a.gid || slices.Contains(a.groups, st.Gid):
		return perm>>3&want == want
	}
	return perm&want == want
}

// check returns an error naming the first folder on the way to path that
// the account cannot enter, or path itself if it lacks the permissions
// want there; what names path in the error ("shard dir").
func (a *account) check(what, path string, want uint32) error {
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dir := string(filepath.Separator)
	for _, part := range strings.Split(strings.Trim(p, string(filepath.Separator)), string(filepath.Separator)) {
		fi, err := os.Stat(dir)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !a.may(fi, permExec) {
			return fmt.Errorf("%s %s: user %s cannot enter %s (mode %v): let it, for example with chmod o+x", what, path, a, dir, fi.Mode().Perm())
		}
		dir = filepath.Join(dir, part)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !a.may(fi, want) {
		return fmt.Errorf("%s %s: user %s lacks %s permission on it (mode %v, owner uid %d)", what, path, a, permName(want), fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
	}
	return nil
}

func permName(want uint32) string {
	var b strings.Builder
	for _, p := range []struct {
		bit  uint32
		name byte
	}{{permRead, 'r'}, {permWrite, 'w'}, {permExec, 'x'}} {
		if want&p.bit != 0 {
			b.WriteByte(p.name)
		}
	}
	return b.String()
}

// handOver makes the tree at root the account's, so that the training
// command can use it. It goes children first and root last: until the end
// every folder it reads is still the envoy's, so a process of the account
// (one left by an earlier run, say) cannot create entries in them or swap
// a folder for a link to elsewhere while the walk follows the path; links
// are changed themselves (Lchown), never followed.
func (a *account) handOver(root string) error {
	fi, err := os.Lstat(root)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		entries, err := os.ReadDir(root)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := a.handOver(filepath.Join(root, e.Name())); err != nil {
				return err
			}
		}
	}
	return os.Lchown(root, int(a.uid), int(a.gid))
}

// openProduced opens a file the training command wrote, for reading by the
// envoy, which may be more privileged than the command: the file must be a
// regular file (not a link to the envoy's key, not a FIFO that blocks the
// envoy forever) and, when the command runs as owner, owned by it (not a
// hard link to a file of the envoy's).
func openProduced(path string, owner *account) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, nil, fmt.Errorf("%s is a symbolic link; want a regular file", path)
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s is %s; want a regular file", path, fileKind(fi.Mode()))
	}
	if owner != nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || st.Uid != owner.uid {
			f.Close()
			return nil, nil, fmt.Errorf("%s is not owned by user %s, who runs the training command", path, owner)
		}
	}
	return f, fi, nil
}

// fileKind names a mode's file type for an error.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}
