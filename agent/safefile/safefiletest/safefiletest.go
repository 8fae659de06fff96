//go:build unix

// Package safefiletest races a real unprivileged process against root's
// writes into that user's directory, for the symlink tests of safefile and
// its callers.
package safefiletest

import (
	"bufio"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// Attacker is a running attacker process.
type Attacker struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	out   *bufio.Reader
}

// Scratch returns a fresh directory (0755, on tmpfs when there is one:
// thousands of fsyncs on a disk prove nothing more) that uid can traverse,
// removed when the test ends.
func Scratch(t testing.TB) string {
	t.Helper()
	parent := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		parent = "/dev/shm"
	}
	base, err := os.MkdirTemp(parent, "safefile-race-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := chmodOpen(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

// Start builds the attacker into scratch and runs it as uid:gid against dir
// (which that user must own), swapping every name for a symlink to victim.
func Start(t testing.TB, scratch, dir, victim string, uid, gid int) *Attacker {
	t.Helper()
	testenv.RequireBinary(t, "go")
	bin, err := testenv.GoBuild(scratch, "attacker", "github.com/molecule-ai/molecule-agent/agent/safefile/safefiletest/attacker")
	if err != nil {
		t.Fatal(err)
	}
	if err := chmodOpen(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, dir, victim)
	cmd.Env = []string{}
	cmd.Dir = filepath.Dir(dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a := &Attacker{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return a
}

// Stop ends the attack and returns how many swaps it made; a test whose
// attacker made none did not race anything and fails.
func (a *Attacker) Stop(t testing.TB) int {
	t.Helper()
	_ = a.stdin.Close()
	line, _ := a.out.ReadString('\n')
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("attacker: %v", err)
	}
	swaps, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("attacker printed %q, want a count", line)
	}
	if swaps == 0 {
		t.Fatal("the attacker made no swap: the race was not run")
	}
	return swaps
}

// FileState is what a victim must keep: mode, owner and content.
type FileState struct {
	Mode os.FileMode
	UID  uint32
	Data string
}

// StateOf returns path's state, without following a symlink at path.
func StateOf(t testing.TB, path string) FileState {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return FileState{Mode: fi.Mode(), UID: fi.Sys().(*syscall.Stat_t).Uid, Data: string(b)}
}

// Victim creates a root-owned 0600 file in dir and returns its path and
// state.
func Victim(t testing.TB, dir string) (string, FileState) {
	t.Helper()
	p := filepath.Join(dir, "shadow")
	if err := os.WriteFile(p, []byte("root:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, StateOf(t, p)
}

// Nobody returns the uid and gid of the unprivileged user the tests race.
func Nobody(t testing.TB) (int, int) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// chmodOpen sets the mode of the file or directory it opens, by descriptor,
// never by path: even a test helper running as root does not chmod a path.
func chmodOpen(path string, mode os.FileMode) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Chmod(mode)
}
