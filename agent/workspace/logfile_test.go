//go:build unix

package workspace_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

func TestRotatingFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "runtime.log")
	w, err := workspace.OpenRotating(path, 100, 2, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	line := []byte(strings.Repeat("x", 39) + "\n") // 40 bytes
	for range 20 {
		if n, err := w.Write(line); err != nil || n != len(line) {
			t.Fatalf("write: got %d, %v", n, err)
		}
	}
	names, _ := filepath.Glob(path + "*")
	want := []string{path, path + ".1", path + ".2"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("files: got %v, want %v (keep 2)", names, want)
	}
	for _, n := range names {
		fi, _ := os.Stat(n)
		if fi.Size() > 100 {
			t.Errorf("%s: %d bytes, want at most 100", n, fi.Size())
		}
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, want 0640", n, fi.Mode().Perm())
		}
	}
	// A write larger than the limit is cut, not refused.
	big := bytes.Repeat([]byte("y"), 250)
	if n, err := w.Write(big); err != nil || n != 250 {
		t.Fatalf("big write: got %d, %v", n, err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 100 {
		t.Errorf("after a big write: %d bytes, want 100", fi.Size())
	}
	// Reopening appends.
	_ = w.Close()
	w2, err := workspace.OpenRotating(path, 1000, 2, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w2.Write([]byte("z\n"))
	_ = w2.Close()
	if b, _ := os.ReadFile(path); !bytes.HasSuffix(b, []byte("yz\n")) || len(b) != 102 {
		t.Errorf("reopen: got %d bytes ending %q, want appended", len(b), b[max(0, len(b)-3):])
	}
	if _, err := w2.Write([]byte("x")); err == nil {
		t.Errorf("write after close: want an error")
	}
}

// TestRotatingFileRefusesPlantedSymlink: a symlink at the log's path (or a
// symlinked log dir) is refused, and the file it points to is left alone.
func TestRotatingFileRefusesPlantedSymlink(t *testing.T) {
	base := t.TempDir()
	victim := filepath.Join(base, "victim")
	if err := os.WriteFile(victim, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := filepath.Join(base, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(logs, "runtime.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(logs, filepath.Join(base, "linkdir")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(logs, "runtime.log"), filepath.Join(base, "linkdir", "other.log")} {
		w, err := workspace.OpenRotating(path, 100, 2, -1, -1)
		if err == nil {
			_ = w.Close()
			t.Errorf("OpenRotating(%s) succeeded, want a refusal", path)
		} else if !strings.Contains(err.Error(), "symlink") {
			t.Errorf("OpenRotating(%s): %v, want an error saying symlink", path, err)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep\n" {
		t.Errorf("victim: got %q", b)
	}
	if fi, _ := os.Stat(victim); fi.Mode().Perm() != 0o600 {
		t.Errorf("victim mode: got %v", fi.Mode().Perm())
	}
}

// TestSink runs a real child writing to the sink's file: output lands in the
// rotating file and each line reaches the callback, long lines cut.
func TestSink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.log")
	w, err := workspace.OpenRotating(path, 1<<20, 1, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var mu sync.Mutex
	var lines []string
	sink, err := workspace.NewSink(w, func(l []byte) {
		mu.Lock()
		lines = append(lines, string(l))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	// The unit's redactor consults the agent-wide one, which holds every
	// value of the secret store (another unit's, a rotated-away one).
	agentWide := supervisor.NewRedactor(nil)
	agentWide.Remember([]string{"other-units-secret"})
	red := supervisor.NewRedactor(agentWide)
	red.Set([]string{"hunter2-secret"})
	sink.AddRedactor(red)
	long := strings.Repeat("L", 20000)
	cmd := exec.Command("/bin/sh", "-c", `echo one hunter2-secret other-units-secret; echo two >&2; printf '%s\n' "$LONG"; printf 'last'`)
	cmd.Env = []string{"LONG=" + long}
	cmd.Stdout, cmd.Stderr = sink.File(), sink.File()
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	sink.Close(5 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 4 || lines[0] != "one hunter2-secret other-units-secret" || lines[1] != "two" || lines[3] != "last" {
		t.Fatalf("lines: got %d %q..., want one, two, <long>, last", len(lines), lines[:min(2, len(lines))])
	}
	if len(lines[2]) != 8192 {
		t.Errorf("long line: callback got %d bytes, want it cut at 8192", len(lines[2]))
	}
	b, _ := os.ReadFile(path)
	if want := "one [redacted] [redacted]\ntwo\n" + long + "\nlast"; string(b) != want {
		t.Errorf("file: got %d bytes, want %d (all output, uncut)", len(b), len(want))
	}
}
