//go:build unix

package safefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrSymlink is wrapped by every refusal of a symlinked path component.
var ErrSymlink = errors.New("is a symlink")

// ErrOwner is wrapped by every refusal of a directory owned by the wrong user.
var ErrOwner = errors.New("owned by another user")

const dirFlags = unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_RDONLY | unix.O_CLOEXEC

// Dir is a directory opened by descriptor. Every operation on it is relative
// to that descriptor, so renaming or replacing the path it was opened by
// does not redirect it.
type Dir struct {
	f    *os.File
	path string
}

// OpenDir opens the existing directory path without following a symlink in
// any of its components, and checks that it is owned by the agent's user or
// by uid (-1: the agent's user only) and not writable by every user.
func OpenDir(path string, uid int) (*Dir, error) {
	f, abs, err := walk(path, false, 0)
	if err != nil {
		return nil, err
	}
	d := &Dir{f: f, path: abs}
	if err := d.checkOwner(uid); err != nil {
		_ = f.Close()
		return nil, err
	}
	return d, nil
}

// EnsureDir creates path (and missing parents, 0755) without following a
// symlink, then sets its mode to perm and its owner to uid:gid (-1 keeps
// the agent's) on the open descriptor. An existing directory must be owned
// by the agent's user or by uid.
func EnsureDir(path string, perm os.FileMode, uid, gid int) error {
	f, abs, err := walk(path, true, perm)
	if err != nil {
		return err
	}
	d := &Dir{f: f, path: abs}
	defer d.Close()
	if err := d.checkOwner(uid); err != nil {
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("directory %s: chown to %d:%d (the agent must run as root): %w", abs, uid, gid, err)
		}
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("directory %s: %w", abs, err)
	}
	return nil
}

// Mkdir creates path (and missing parents) with mode perm if it does not
// exist, without following a symlink; an existing directory keeps its mode
// and owner, which must be the agent's user or uid (-1: the agent's only).
func Mkdir(path string, perm os.FileMode, uid int) error {
	f, abs, err := walk(path, true, perm)
	if err != nil {
		return err
	}
	d := &Dir{f: f, path: abs}
	defer d.Close()
	return d.checkOwner(uid)
}

// Path is the absolute path the directory was opened by.
func (d *Dir) Path() string { return d.path }

// Close closes the descriptor.
func (d *Dir) Close() error { return d.f.Close() }

func (d *Dir) fd() int { return int(d.f.Fd()) }

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

func (d *Dir) checkOwner(uid int) error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd(), &st); err != nil {
		return fmt.Errorf("directory %s: %w", d.path, err)
	}
	owner := int(st.Uid)
	if owner != os.Geteuid() && owner != uid {
		want := fmt.Sprintf("uid %d (the agent)", os.Geteuid())
		if uid >= 0 && uid != os.Geteuid() {
			want += fmt.Sprintf(" or uid %d (the file's owner)", uid)
		}
		return fmt.Errorf("directory %s is %w (uid %d), want %s: the agent writes as root only into directories it or the file's owner owns; chown it or configure another path", d.path, ErrOwner, owner, want)
	}
	if st.Mode&0o002 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("directory %s is writable by every user (mode %o): chmod o-w it or configure another path", d.path, st.Mode&0o7777)
	}
	return nil
}

// walk opens path one component at a time from the root with O_NOFOLLOW,
// refusing any symlink, creating missing components when create is set
// (the last with perm, parents 0755).
func walk(path string, create bool, perm os.FileMode) (*os.File, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("directory %s: %w", path, err)
	}
	fd, err := unix.Open("/", dirFlags, 0)
	if err != nil {
		return nil, "", fmt.Errorf("directory /: %w", err)
	}
	comps := strings.Split(strings.TrimPrefix(abs, "/"), "/")
	cur := ""
	for i, c := range comps {
		if c == "" {
			continue
		}
		cur += "/" + c
		nfd, err := openComponent(fd, c, cur, create, i == len(comps)-1, perm)
		_ = unix.Close(fd)
		if err != nil {
			return nil, "", err
		}
		fd = nfd
	}
	return os.NewFile(uintptr(fd), abs), abs, nil
}

func openComponent(parent int, name, path string, create, last bool, perm os.FileMode) (int, error) {
	for try := 0; ; try++ {
		fd, err := unix.Openat(parent, name, dirFlags, 0)
		if err == nil {
			return fd, nil
		}
		if errors.Is(err, unix.ENOENT) && create && try < 10 {
			mode := uint32(0o755)
			if last {
				mode = uint32(perm.Perm())
			}
			if err := unix.Mkdirat(parent, name, mode); err != nil && !errors.Is(err, unix.EEXIST) {
				return -1, fmt.Errorf("create directory %s: %w", path, err)
			}
			continue // open what is there now, which may not be what we made
		}
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			var st unix.Stat_t
			if serr := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				target := make([]byte, 4096)
				n, _ := unix.Readlinkat(parent, name, target)
				return -1, fmt.Errorf("directory %s %w (to %s): the agent does not follow symlinks in paths it writes as root; configure the real path, or remove the link", path, ErrSymlink, target[:max(n, 0)])
			}
		}
		return -1, fmt.Errorf("directory %s: %w", path, err)
	}
}
