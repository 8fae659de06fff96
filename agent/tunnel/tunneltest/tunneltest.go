//go:build unix

// Package tunneltest gives tests a real cloudflared: the binary built from
// the version pinned in packaging/cloudflared, syntactically valid fake
// tunnel tokens, and a way to run a test inside an empty network namespace
// so cloudflared can never reach the internet.
package tunneltest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// Version is the cloudflared release pinned in packaging/cloudflared.
const Version = "2026.7.1"

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of a cloudflared built from the pin. It uses the
// repository's bin/cloudflared (from `make cloudflared`) when that reports
// Version and is newer than the pin's files; otherwise it builds once with
// packaging/cloudflared/build.sh into a cache under the temp directory,
// keyed by the pin's files. A failed build fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = binary() })
	if binErr != nil {
		t.Fatalf("cloudflared from the pin: %v", binErr)
	}
	return binPath
}

func binary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	pin := filepath.Join(root, "packaging", "cloudflared")
	files := []string{filepath.Join(pin, "go.mod"), filepath.Join(pin, "go.sum"), filepath.Join(pin, "build.sh")}
	if made := filepath.Join(root, "bin", "cloudflared"); fresh(made, files) {
		return made, nil
	}
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	dir := filepath.Join(os.TempDir(), "molecule-agent-test", "cloudflared-"+hex.EncodeToString(h.Sum(nil))[:16])
	out := filepath.Join(dir, "cloudflared")
	if reportsVersion(out) {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	cmd := exec.Command(filepath.Join(pin, "build.sh"), tmp)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %w\n%s", cmd, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	if !reportsVersion(out) {
		return "", fmt.Errorf("%s --version does not report %s", out, Version)
	}
	return out, nil
}

// fresh reports whether bin reports Version and is newer than every file.
func fresh(bin string, files []string) bool {
	st, err := os.Stat(bin)
	if err != nil {
		return false
	}
	for _, f := range files {
		if fs, err := os.Stat(f); err != nil || fs.ModTime().After(st.ModTime()) {
			return false
		}
	}
	return reportsVersion(bin)
}

func reportsVersion(bin string) bool {
	out, err := exec.Command(bin, "--version").Output()
	return err == nil && bytes.HasPrefix(out, []byte("cloudflared version "+Version+" "))
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "packaging", "cloudflared", "build.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no packaging/cloudflared/build.sh above the working directory")
		}
		dir = parent
	}
}

// Token is a syntactically valid cloudflared tunnel token that no edge knows.
type Token struct {
	// Token is the base64 form cloudflared reads from TUNNEL_TOKEN.
	Token string
	// TunnelID is its tunnel UUID.
	TunnelID string
	// Secret is its tunnel secret (base64), the part that must never leak.
	Secret string
}

// FakeToken makes a token with a random tunnel ID and secret, in the form
// the Cloudflare dashboard hands out: base64 of {"a":…,"t":…,"s":…}.
func FakeToken(t testing.TB) Token {
	t.Helper()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	tok := Token{TunnelID: uuid.NewString(), Secret: base64.StdEncoding.EncodeToString(secret)}
	b, err := json.Marshal(map[string]string{"a": strings.ReplaceAll(uuid.NewString(), "-", ""), "t": tok.TunnelID, "s": tok.Secret})
	if err != nil {
		t.Fatal(err)
	}
	tok.Token = base64.StdEncoding.EncodeToString(b)
	return tok
}

// netnsEnv marks the re-executed test binary running inside the namespace.
const netnsEnv = "MOLECULE_TEST_IN_EMPTY_NETNS"

// InEmptyNetns runs the calling top-level test inside a new network namespace
// that has only loopback. Outside, it re-executes the test binary under
// `unshare --net` for just this test, reports its output and result, and
// returns false: the caller returns at once. Inside, it brings loopback up,
// checks no other interface exists and returns true. Gate the test with
// testenv.RequireNetns first, and call Binary before it (building needs the
// module proxy, which the namespace cannot reach).
func InEmptyNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == "1" {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			t.Fatalf("ip link set lo up: %v: %s", err, out)
		}
		out, err := exec.Command("ip", "-o", "link", "show").Output()
		if err != nil {
			t.Fatalf("ip link show: %v", err)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], " lo:") {
			t.Fatalf("namespace is not empty:\n%s", out)
		}
		return true
	}
	if strings.Contains(t.Name(), "/") {
		t.Fatal("InEmptyNetns must be called from a top-level test")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--net", "--", self, "-test.run=^" + t.Name() + "$", "-test.count=1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout="+time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	// unshare execs the test binary in place; it dies with this process.
	cmd.SysProcAttr = dieWithParent()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	output := out.String()
	passed := err == nil && strings.Contains(output, "--- PASS: "+t.Name()+" (")
	if !passed || testing.Verbose() {
		t.Logf("inside the empty network namespace:\n%s", output)
	}
	if err != nil {
		t.Fatalf("%s in an empty network namespace: %v", t.Name(), err)
	}
	if !passed {
		t.Fatalf("%s did not pass inside the namespace (skipped or not run)", t.Name())
	}
	return false
}
