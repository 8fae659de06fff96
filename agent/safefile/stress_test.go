package safefile

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// attackerEnv makes the test binary the attacker: it runs as the
// directory's unprivileged owner and, until its stdin closes, replaces
// every name in the directory with a symlink to the victim.
const attackerEnv = "SAFEFILE_TEST_ATTACKER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(attackerEnv); spec != "" {
		os.Exit(attack(spec))
	}
	goleak.VerifyTestMain(m)
}

// attack runs as the unprivileged user; spec is "dir:victim". It prints
// how many swaps it made when stdin closes.
func attack(spec string) int {
	dir, target, _ := strings.Cut(spec, ":")
	stop := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(stop) }()
	swaps := 0
	for n := 0; ; n++ {
		select {
		case <-stop:
			fmt.Println(swaps)
			return 0
		default:
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		names := []string{"config.yaml", ".auth_token"}
		for _, e := range ents {
			if e.Type()&os.ModeSymlink == 0 {
				names = append(names, e.Name())
			}
		}
		for _, name := range names {
			link := filepath.Join(dir, "x"+strconv.Itoa(n))
			if os.Symlink(target, link) != nil {
				continue
			}
			if os.Rename(link, filepath.Join(dir, name)) == nil {
				swaps++
			} else {
				_ = os.Remove(link)
			}
		}
	}
}

// TestStressSymlinkRace races a process of the directory's unprivileged
// owner, swapping every name (the temporary files included) for symlinks to
// root-only files, against thousands of writes: no file outside the
// directory ever changes mode, owner or content.
func TestStressSymlinkRace(t *testing.T) {
	testenv.RequireRoot(t)
	uid, gid := nobody(t)
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	// tmpfs when there is one: thousands of fsyncs on a disk prove nothing more.
	parent := os.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		parent = "/dev/shm"
	}
	base, err := os.MkdirTemp(parent, "safefile-stress-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // nobody must reach the binary and dir
		t.Fatal(err)
	}
	bin := filepath.Join(base, "attacker")
	if err := copyExecutable(bin); err != nil {
		t.Fatal(err)
	}
	vpath, before := victim(t, base)
	dir := filepath.Join(base, "configs")
	if err := EnsureDir(dir, 0o750, uid, gid); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin)
	cmd.Env = []string{attackerEnv + "=" + dir + ":" + vpath}
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
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

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
	_ = stdin.Close()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if err := cmd.Wait(); err != nil {
		t.Fatalf("attacker: %v", err)
	}
	swaps, _ := strconv.Atoi(line[:max(len(line)-1, 0)])
	t.Logf("%d writes, %d failed, attacker made %d swaps, %d writes found a symlink in place", iterations, failed, swaps, sawLink)
	if swaps == 0 {
		t.Fatal("the attacker made no swap: the race was not run")
	}
}

func copyExecutable(dst string) error {
	src, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
