//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestRunDirSymlinksRefused: a directory symlink under the run dir (or the
// run dir itself a symlink) is refused, and nothing is written where it
// points.
func TestRunDirSymlinksRefused(t *testing.T) {
	t.Run("a unit's file dir under run_dir", func(t *testing.T) {
		dir := t.TempDir()
		elsewhere := filepath.Join(dir, "elsewhere")
		for _, d := range []string{elsewhere, filepath.Join(dir, "run")} {
			if err := os.Mkdir(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(elsewhere, filepath.Join(dir, "run", "tunnel")); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
units:
  - name: tunnel
    command: /bin/sleep
    args: ["1000"]
    files:
      - {path: %[1]s/run/tunnel/token, content: "literal-content"}
  - name: plain
    command: /bin/sleep
    args: ["1000"]
`, dir)
		a := runAgent(t, dir, writeConfig(t, dir, cfg), nil)
		r := a.waitFor(t, "tunnel refused", func(r *status.Report) bool {
			u := unitOf(r, "tunnel")
			return unitOf(r, "plain").Ready && u.State != supervisor.Running && strings.Contains(u.LastError, "symlink")
		})
		if d := unitOf(r, "tunnel").LastError; !strings.Contains(d, filepath.Join(dir, "run", "tunnel")+" is a symlink") {
			t.Errorf("last error %q should name the symlinked directory", d)
		}
		if _, err := os.Lstat(filepath.Join(elsewhere, "token")); err == nil {
			t.Errorf("the agent wrote through the symlink into %s", elsewhere)
		}
	})
	t.Run("run_dir itself", func(t *testing.T) {
		dir := t.TempDir()
		real := filepath.Join(dir, "real")
		if err := os.Mkdir(real, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(dir, "run")); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf("state_dir: %[1]s/state\nrun_dir: %[1]s/run\nunits:\n  - name: plain\n    command: /bin/sleep\n    args: [\"1000\"]\n", dir)
		a := runAgent(t, dir, writeConfig(t, dir, cfg), nil)
		select {
		case <-a.done:
		case <-time.After(testenv.Long):
			t.Fatal("the agent kept running with a symlinked run_dir")
		}
		if out := a.log.String(); !strings.Contains(out, "run_dir") || !strings.Contains(out, "symlink") {
			t.Errorf("the agent's error should name run_dir and the symlink: %s", out)
		}
		if ents, _ := os.ReadDir(real); len(ents) != 0 {
			t.Errorf("the agent wrote %d entries through the symlink", len(ents))
		}
	})
}
