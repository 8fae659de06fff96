//go:build unix

package safefile

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/safefile/safefiletest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStressSymlinkRace races a process of the directory's unprivileged
// owner, swapping every name (the temporary files included) for symlinks to
// a root-only file, against thousands of writes: no file outside the
// directory ever changes mode, owner or content.
func TestStressSymlinkRace(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := nobody(t)
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	base := safefiletest.Scratch(t)
	vpath, before := victim(t, base)
	dir := filepath.Join(base, "configs")
	if err := EnsureDir(dir, 0o750, uid, gid); err != nil {
		t.Fatal(err)
	}
	a := safefiletest.Start(t, base, dir, vpath, uid, gid)
	failed, sawLink := 0, 0
	for i := range iterations {
		name, perm := "config.yaml", os.FileMode(0o644)
		if i%2 == 1 {
			name, perm = ".auth_token", 0o600
		}
		if err := Write(dir, name, []byte("v"+strconv.Itoa(i)), perm, uid, gid); err != nil {
			failed++ // the owner may break our write; it may not redirect it
		}
		if fi, err := os.Lstat(filepath.Join(dir, name)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			sawLink++
		}
		if got := stateOf(t, vpath); got != before {
			t.Fatalf("iteration %d: victim outside the directory changed: got %+v, want %+v", i, got, before)
		}
	}
	swaps := a.Stop(t)
	t.Logf("%d writes, %d failed, attacker made %d swaps, %d writes found a symlink in place", iterations, failed, swaps, sawLink)
}
