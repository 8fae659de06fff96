//go:build unix

package workspace_test

import (
	"path/filepath"
	"strconv"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/safefile/safefiletest"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestConfigWritesRaceTheRuntimeUser: the runtime's user owns the configs
// dir and swaps every name in it for a symlink to a root-only file while
// root writes config.yaml (0644) and .auth_token thousands of times. The
// file outside never changes (WriteConfig used to os.Chmod the path after
// the rename, making any 0600 file on the host 0644).
func TestConfigWritesRaceTheRuntimeUser(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := safefiletest.Nobody(t)
	iterations := 2000
	if testing.Short() {
		iterations = 200
	}
	base := safefiletest.Scratch(t)
	victim, before := safefiletest.Victim(t, base)
	dir := filepath.Join(base, "configs")
	if err := workspace.EnsureDir(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	a := safefiletest.Start(t, base, dir, victim, uid, gid)
	for i := range iterations {
		_ = workspace.WriteConfig(dir, workspace.RuntimeConfig{Name: "ws-" + strconv.Itoa(i), Runtime: "langgraph"}, uid, gid)
		_ = workspace.WriteToken(dir, secretstore.New("token-"+strconv.Itoa(i)), uid, gid)
		if i%100 == 0 {
			_ = workspace.EnsureDir(dir, uid, gid)
		}
		if got := safefiletest.StateOf(t, victim); got != before {
			t.Fatalf("iteration %d: the file outside the configs dir changed: got %+v, want %+v", i, got, before)
		}
	}
	t.Logf("attacker made %d swaps", a.Stop(t))
}
