// Package testenv gates tests on the real parts they need (Docker, root,
// PostgreSQL, network namespaces). Outside CI a missing part skips the test;
// under CI=true it fails it, so a skipped test never hides a missing install.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Timeouts shared by the project's tests.
const (
	// Short bounds waits for things that should happen almost at once.
	Short = 10 * time.Second
	// Long bounds waits that involve real processes starting or backing off.
	Long = 60 * time.Second
)

// InCI reports whether the tests run in CI, where a missing part is a failure.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t outside CI and fails it in CI, naming what to install.
func Missing(t testing.TB, what string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required in CI but missing; .ci/run must install it", what)
	}
	t.Skipf("%s not available (set CI=true to make this a failure)", what)
}

// RequireRoot needs uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root")
	}
}

// RequireBinary needs an executable on PATH and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, name)
	}
	return p
}

// RequireDocker needs a reachable Docker engine on /var/run/docker.sock.
func RequireDocker(t testing.TB) {
	t.Helper()
	sock := "/var/run/docker.sock"
	if h := os.Getenv("DOCKER_HOST"); len(h) > 7 && h[:7] == "unix://" {
		sock = h[7:]
	}
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(context.Background(), "unix", sock)
	if err != nil {
		Missing(t, "a running Docker engine ("+err.Error()+")")
		return
	}
	_ = c.Close()
}

// RequireNetns needs root and the ip tool to make network namespaces.
func RequireNetns(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "ip")
	RequireBinary(t, "unshare")
}

// Buffer is a bytes.Buffer safe for concurrent writes, for capturing the
// output of processes and loggers in tests.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Import paths of the project's two binaries, for GoBuild.
const (
	AgentPackage        = "github.com/molecule-ai/molecule-agent/agent/cmd/molecule-agent"
	ControlPlanePackage = "github.com/molecule-ai/molecule-agent/controlplane/cmd/molecule-controlplane"
)

// GoBuild builds the main package pkg (an import path) with CGO off into
// dir/name and returns the binary's path. Extra arguments go to go build
// before the package (e.g. "-ldflags", "-X main.version=test").
func GoBuild(dir, name, pkg string, extra ...string) (string, error) {
	out := filepath.Join(dir, name)
	args := append(append([]string{"build", "-o", out}, extra...), pkg)
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// RunMain is a TestMain body for packages that run binaries: it builds
// them with build into a fresh directory (0755, so unit users can run
// them), runs the tests, fails the run on leaked goroutines when the tests
// passed, removes the directory and returns the exit code for os.Exit.
func RunMain(m *testing.M, build func(dir string) error) int {
	dir, err := os.MkdirTemp("", "molecule-test-")
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		err = build(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
