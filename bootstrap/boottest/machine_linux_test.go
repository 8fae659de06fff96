//go:build unix

package boottest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// The rootfs: Debian bookworm, minimal, with what the test needs (systemd
// as init, ip for the veth, busybox httpd as a stand-in runtime,
// ca-certificates because the .deb depends on it).
const (
	suite       = "bookworm"
	rootfsCache = "/var/cache/molecule-agent-test/rootfs"
	recipe      = "v1" // bump when the rootfs preparation changes
)

var packages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "busybox", "ca-certificates", "procps"}

// debianMirror reads the Debian mirror apt uses here, from sources.list
// or deb822 .sources files.
func debianMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*")
	files = append([]string{"/etc/apt/sources.list"}, files...)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			var url string
			switch {
			case len(fields) >= 2 && fields[0] == "URIs:":
				url = fields[1]
			case len(fields) >= 3 && fields[0] == "deb":
				url = fields[1]
				if strings.HasPrefix(url, "[") { // deb [signed-by=...] url
					for _, f := range fields[1:] {
						if strings.HasPrefix(f, "http") {
							url = f
							break
						}
					}
				}
			}
			if strings.HasPrefix(url, "http") && strings.Contains(url, "debian") && !strings.Contains(url, "security") {
				return strings.TrimSuffix(url, "/")
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// rootfs returns a cached Debian rootfs, building it (~1 min) the first
// time for this package list. The cache is keyed by a hash of the suite,
// mirror, packages and recipe, and guarded by a lock file.
func rootfs(t *testing.T) string {
	t.Helper()
	mirror := debianMirror()
	h := sha256.Sum256([]byte(strings.Join(append([]string{suite, mirror, recipe}, packages...), "\n")))
	dir := filepath.Join(rootfsCache, hex.EncodeToString(h[:])[:16])
	if err := os.MkdirAll(rootfsCache, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(rootfsCache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) }()
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	start := time.Now()
	out, err := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(packages, ","),
		suite, tmp, mirror).CombinedOutput()
	if err != nil {
		t.Fatalf("debootstrap %s from %s: %v\n%s", suite, mirror, err, tail(out, 30))
	}
	// A fresh machine ID on every boot; no getty waiting on the console.
	for _, f := range []string{"etc/machine-id"} {
		if err := os.WriteFile(filepath.Join(tmp, f), nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Remove(filepath.Join(tmp, "etc/systemd/system/getty.target.wants/getty@tty1.service"))
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("built rootfs %s in %s", dir, time.Since(start).Round(time.Second))
	return dir
}

func tail(b []byte, lines int) string {
	l := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// machine is a booted nspawn container on an overlay of the cached rootfs.
type machine struct {
	t       *testing.T
	name    string
	root    string // the merged overlay: the container's /
	cmd     *exec.Cmd
	exited  chan struct{}
	leader  int // the container's systemd, as a host PID
	console *testenv.Buffer
	hostIP  string
	guestIP string
}

// newMachine mounts a writable overlay of lower; prepare runs on its
// root before boot (install the .deb, write files).
func newMachine(t *testing.T, lower string) *machine {
	t.Helper()
	dir := t.TempDir()
	m := &machine{t: t, name: fmt.Sprintf("mab-%d", os.Getpid()%100000), root: filepath.Join(dir, "root"),
		console: &testenv.Buffer{}, exited: make(chan struct{})}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, filepath.Join(dir, "upper"), filepath.Join(dir, "work"))
	if err := syscall.Mount("overlay", m.root, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(m.root, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m.root, err)
		}
	})
	return m
}

// run runs a command in the (not yet booted) rootfs with systemd-nspawn.
func (m *machine) runInRoot(args ...string) {
	m.t.Helper()
	a := append([]string{"-D", m.root, "--register=no", "--keep-unit", "--quiet", "--pipe", "--"}, args...)
	if out, err := exec.Command("systemd-nspawn", a...).CombinedOutput(); err != nil {
		m.t.Fatalf("nspawn %v: %v\n%s", args, err, out)
	}
}

// write puts a file into the container's filesystem.
func (m *machine) write(path string, data []byte, mode os.FileMode) {
	m.t.Helper()
	p := filepath.Join(m.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		m.t.Fatal(err)
	}
}

// boot starts the container with systemd as init on its own network
// namespace (a veth pair to the host) and waits for systemd to be up.
func (m *machine) boot(ctx context.Context) {
	t := m.t
	t.Helper()
	m.cmd = exec.Command("systemd-nspawn", "-D", m.root, "--boot", "--register=no", "--keep-unit",
		"--network-veth", "-M", m.name, "--console=passive")
	m.cmd.Stdout, m.cmd.Stderr = m.console, m.console
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { _ = m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(m.shutdown)

	deadline := time.Now().Add(testenv.Long)
	for m.leader == 0 {
		m.leader = childNamed(m.cmd.Process.Pid, "systemd")
		if m.leader != 0 {
			break
		}
		select {
		case <-m.exited:
			t.Fatalf("systemd-nspawn exited:\n%s", m.console.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no systemd inside the container:\n%s", m.console.String())
		}
	}
	var state string
	for time.Now().Before(deadline) {
		state, _ = m.exec(ctx, "systemctl", "is-system-running")
		if state == "running" || state == "degraded" {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling systemd's state, not synchronising
	}
	if state != "running" && state != "degraded" {
		t.Fatalf("container systemd is %q after %s:\n%s", state, testenv.Long, m.console.String())
	}
	m.network(ctx)
}

// network gives the veth pair addresses: the host side is where services
// for the container (the control plane) listen.
func (m *machine) network(ctx context.Context) {
	n := os.Getpid()%200 + 20
	m.hostIP, m.guestIP = fmt.Sprintf("10.251.%d.1", n), fmt.Sprintf("10.251.%d.2", n)
	hostIf := "ve-" + m.name
	for _, c := range [][]string{{"addr", "add", m.hostIP + "/30", "dev", hostIf}, {"link", "set", hostIf, "up"}} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			m.t.Fatalf("ip %v: %v\n%s", c, err, out)
		}
	}
	for _, c := range [][]string{{"ip", "addr", "add", m.guestIP + "/30", "dev", "host0"}, {"ip", "link", "set", "host0", "up"}} {
		if out, err := m.exec(ctx, c...); err != nil {
			m.t.Fatalf("in container %v: %v\n%s", c, err, out)
		}
	}
}

// childNamed finds a child of ppid whose comm is name.
func childNamed(ppid int, name string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		comm := s[strings.IndexByte(s, '(')+1 : i]
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) && comm == name {
			return pid
		}
	}
	return 0
}

// exec runs a command inside the booted container (all its namespaces)
// with a clean environment and returns its trimmed combined output.
func (m *machine) exec(ctx context.Context, args ...string) (string, error) {
	return m.execEnv(ctx, nil, args...)
}

func (m *machine) execEnv(ctx context.Context, env []string, args ...string) (string, error) {
	a := append([]string{"-t", strconv.Itoa(m.leader), "-a", "--", "env", "-i",
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, env...)
	a = append(a, args...)
	out, err := exec.CommandContext(ctx, "nsenter", a...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// must runs a command inside and fails the test if it fails.
func (m *machine) must(ctx context.Context, args ...string) string {
	m.t.Helper()
	out, err := m.exec(ctx, args...)
	if err != nil {
		m.t.Fatalf("in container %v: %v\n%s", args, err, out)
	}
	return out
}

// shutdown powers the container off (SIGRTMIN+4 to its systemd), and
// kills nspawn's process group if it does not exit in time.
func (m *machine) shutdown() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	if m.leader != 0 {
		_ = syscall.Kill(m.leader, syscall.Signal(34+4)) // SIGRTMIN+4: poweroff
	}
	select {
	case <-m.exited:
		return
	case <-time.After(testenv.Long):
	}
	m.t.Errorf("container did not power off in %s; killing it", testenv.Long)
	_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	<-m.exited
}

var errTimeout = errors.New("timed out")

// eventually polls f until it returns nil or d passes.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %s: %v", errTimeout, d, err)
		}
		time.Sleep(50 * time.Millisecond) // polling an outside process's state
	}
}
