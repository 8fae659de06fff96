//go:build unix

package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/safefile/safefiletest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

var (
	nobody  = safefiletest.Nobody
	stateOf = safefiletest.StateOf
	victim  = safefiletest.Victim
)

type fileState = safefiletest.FileState

func TestWriteGivesModeAndOwner(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := nobody(t)
	dir := t.TempDir()
	if err := EnsureDir(filepath.Join(dir, "configs"), 0o750, uid, gid); err != nil {
		t.Fatal(err)
	}
	for _, perm := range []os.FileMode{0o644, 0o600, 0o400} {
		if err := Write(filepath.Join(dir, "configs"), "config.yaml", []byte("a: 1\n"), perm, uid, gid); err != nil {
			t.Fatal(err)
		}
		got := stateOf(t, filepath.Join(dir, "configs", "config.yaml"))
		if want := (fileState{Mode: perm, UID: uint32(uid), Data: "a: 1\n"}); got != want {
			t.Errorf("perm %o: got %+v, want %+v", perm, got, want)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "configs"))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only config.yaml (temporary files left behind?)", len(ents))
	}
}

// TestSymlinkSwappedAfterRename swaps the new name for a symlink to a
// root-only file in the window after the rename, as the directory's owner
// can: nothing outside the directory may change. The writer this replaced
// (rename, then os.Chmod of the path) made the victim 0644.
func TestSymlinkSwappedAfterRename(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := nobody(t)
	base := t.TempDir()
	vpath, before := victim(t, base)
	dir := filepath.Join(base, "configs")
	if err := EnsureDir(dir, 0o750, uid, gid); err != nil {
		t.Fatal(err)
	}
	swapped := 0
	afterRename = func(d, name string) {
		p := filepath.Join(d, name)
		if err := os.Remove(p); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(vpath, p); err != nil {
			t.Error(err)
		}
		swapped++
	}
	t.Cleanup(func() { afterRename = nil })
	for i, perm := range []os.FileMode{0o644, 0o666, 0o400} {
		if err := Write(dir, "config.yaml", []byte("name: x\n"), perm, uid, gid); err != nil {
			t.Fatal(err)
		}
		if swapped != i+1 {
			t.Fatalf("hook ran %d times, want %d", swapped, i+1)
		}
		if got := stateOf(t, vpath); got != before {
			t.Errorf("perm %o: victim outside the directory changed: got %+v, want %+v", perm, got, before)
		}
	}
}

func TestRefusesSymlinkedDirectory(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"Write into a symlinked dir", func() error { return Write(link, "f", []byte("x"), 0o600, -1, -1) }},
		{"Write under a symlinked component", func() error {
			_ = os.Mkdir(filepath.Join(real, "sub"), 0o700)
			return Write(filepath.Join(link, "sub"), "f", []byte("x"), 0o600, -1, -1)
		}},
		{"EnsureDir of a symlink", func() error { return EnsureDir(link, 0o700, -1, -1) }},
		{"EnsureDir under a symlink", func() error { return EnsureDir(filepath.Join(link, "new"), 0o700, -1, -1) }},
		{"Mkdir under a symlink", func() error { return Mkdir(filepath.Join(link, "new2"), 0o700, -1) }},
		{"Remove under a symlink", func() error { return Remove(link, "f") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.op()
			if !errors.Is(err, ErrSymlink) {
				t.Fatalf("got %v, want an error wrapping ErrSymlink", err)
			}
			if want := link; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		})
	}
	if ents, _ := os.ReadDir(real); len(ents) > 1 {
		t.Errorf("the link's target got %d entries, want only sub", len(ents))
	}
}

func TestRefusesWronglyOwnedDirectory(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := nobody(t)
	dir := filepath.Join(t.TempDir(), "theirs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	// A root file, or another user's, into nobody's dir: refused.
	for _, owner := range []int{-1, uid + 1} {
		err := Write(dir, "f", []byte("x"), 0o600, owner, -1)
		if !errors.Is(err, ErrOwner) || !strings.Contains(err.Error(), dir) {
			t.Errorf("Write as uid %d: got %v, want ErrOwner naming %s", owner, err, dir)
		}
	}
	if err := EnsureDir(dir, 0o700, -1, -1); !errors.Is(err, ErrOwner) {
		t.Errorf("EnsureDir for root: got %v, want ErrOwner", err)
	}
	// nobody's own file into nobody's dir is fine.
	if err := Write(dir, "f", []byte("x"), 0o600, uid, gid); err != nil {
		t.Errorf("Write as the dir's owner: %v", err)
	}
	// Removing a name redirects nothing: allowed in anyone's dir.
	if err := Remove(dir, "f"); err != nil {
		t.Errorf("Remove from the user's dir: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("f still there after Remove: %v", err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "f", []byte("x"), 0o600, uid, gid); err == nil || !strings.Contains(err.Error(), "writable by every user") {
		t.Errorf("Write into a world-writable dir: got %v, want a refusal", err)
	}
}

func TestOpenAppendRefusesPlantedFiles(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	vpath, before := victim(t, base)
	dir := filepath.Join(base, "logs")
	if err := Mkdir(dir, 0o755, -1); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vpath, filepath.Join(dir, "sym.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(vpath, filepath.Join(dir, "hard.log")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.log"), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, name := range []string{"sym.log", "hard.log", "fifo.log"} {
		if f, err := d.OpenAppend(name, 0o640, 65534, 65534); err == nil {
			_ = f.Close()
			t.Errorf("OpenAppend(%s) succeeded, want a refusal", name)
		}
	}
	f, err := d.OpenAppend("ok.log", 0o640, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	if got := stateOf(t, vpath); got != before {
		t.Errorf("victim changed: got %+v, want %+v", got, before)
	}
}

func TestNameMustBeOneComponent(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"", ".", "..", "a/b", "../x"} {
		if err := Write(dir, name, nil, 0o600, -1, -1); err == nil {
			t.Errorf("Write(%q) succeeded, want an error", name)
		}
	}
}
