//go:build unix

package safefile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// afterRename, when set by a test, runs between the rename and the steps
// that follow it: the window in which a user owning the directory can swap
// the new name for a symlink.
var afterRename func(dir, name string)

// Write writes data to dir/name atomically (see Dir.WriteFile). dir must
// exist and be owned by the agent's user or by uid.
func Write(dir, name string, data []byte, perm os.FileMode, uid, gid int) error {
	d, err := OpenDir(dir, uid)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(name, data, perm, uid, gid)
}

// Remove removes dir/name without following a symlink in dir's path or at
// name; a name already gone is not an error. Unlinking a name redirects
// nothing, so dir may belong to any user.
func Remove(dir, name string) error {
	f, abs, err := walk(dir, false, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	d := &Dir{f: f, path: abs}
	defer d.Close()
	return d.Remove(name)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return fmt.Errorf("file name %q: want one path component", name)
	}
	return nil
}

// WriteFile replaces name in d atomically: a new temporary file created with
// O_EXCL|O_NOFOLLOW in d, written, given uid:gid (-1 keeps the agent's) and
// perm on its descriptor, synced, then renamed over name. Readers see the old
// or the new content, never a mix, and nothing is done to the path after the
// rename.
func (d *Dir) WriteFile(name string, data []byte, perm os.FileMode, uid, gid int) (err error) {
	if err := checkName(name); err != nil {
		return err
	}
	path := d.join(name)
	f, tmp, err := d.createTemp(name)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = unix.Unlinkat(d.fd(), tmp, 0)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if uid >= 0 || gid >= 0 {
		if err = f.Chown(uid, gid); err != nil {
			return fmt.Errorf("write %s: chown to %d:%d (the agent must run as root to give files to a unit's user): %w", path, uid, gid, err)
		}
	}
	// After the chown, which clears set-id bits.
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = unix.Renameat(d.fd(), tmp, d.fd(), name); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if afterRename != nil {
		afterRename(d.path, name)
	}
	_ = unix.Fsync(d.fd())
	return nil
}

func (d *Dir) createTemp(name string) (*os.File, string, error) {
	var b [8]byte
	for range 100 {
		_, _ = rand.Read(b[:])
		tmp := "." + name + ".tmp-" + hex.EncodeToString(b[:])
		fd, err := unix.Openat(d.fd(), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		return os.NewFile(uintptr(fd), d.join(tmp)), tmp, nil
	}
	return nil, "", errors.New("no free temporary name")
}

// OpenAppend opens name in d for appending, creating it with perm if it is
// missing, without following a symlink; an existing file must be a regular
// file with one link, owned by the agent's user or uid. The open file is
// given uid:gid (-1 keeps the agent's) on its descriptor.
func (d *Dir) OpenAppend(name string, perm os.FileMode, uid, gid int) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	path := d.join(name)
	// O_NONBLOCK: a FIFO planted under name must not block the agent.
	fd, err := unix.Openat(d.fd(), name, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, uint32(perm.Perm()))
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("open %s: it %w: remove it", path, ErrSymlink)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	switch owner := int(st.Uid); {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("open %s: not a regular file (mode %o): remove it", path, st.Mode)
	case st.Nlink != 1:
		err = fmt.Errorf("open %s: has %d hard links: remove it", path, st.Nlink)
	case owner != os.Geteuid() && owner != uid:
		err = fmt.Errorf("open %s: %w (uid %d): remove it", path, ErrOwner, owner)
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err == nil && (uid >= 0 || gid >= 0) {
		err = unix.Fchown(fd, uid, gid)
	}
	if err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// Rename renames oldname to newname within d; neither is followed if a
// symlink.
func (d *Dir) Rename(oldname, newname string) error {
	if err := errors.Join(checkName(oldname), checkName(newname)); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd(), oldname, d.fd(), newname); err != nil {
		return &os.LinkError{Op: "rename", Old: d.join(oldname), New: d.join(newname), Err: err}
	}
	return nil
}

// Remove removes name from d (a symlink itself, never its target); a name
// already gone is not an error.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd(), name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", d.join(name), err)
	}
	return nil
}
