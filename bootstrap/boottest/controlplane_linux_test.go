//go:build unix

package boottest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/api/tlstest"
)

// controlPlane is the real molecule-controlplane, run with `dev` (SQLite,
// admin and enrollment tokens in files) on the host side of the veth. It
// is off loopback for the agent, so it serves HTTPS with a certificate of a
// test CA the agent pins (control_plane.ca_file).
type controlPlane struct {
	url        string
	adminToken secretstore.Secret
	enrollFile string
	ca         *tlstest.CA
}

// controlPlaneCA is where the provisioner (here, the test) places the CA in
// the container, as an AMI would bake it.
const controlPlaneCA = "/etc/molecule-agent/control-plane-ca.pem"

// startControlPlane builds and runs the control plane on the host end of
// m's veth pair, so only the container (and the host) can reach it.
func startControlPlane(t *testing.T, ctx context.Context, m *machine) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	bin, err := testenv.GoBuild(dir, "molecule-controlplane", testenv.ControlPlanePackage)
	if err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, "boottest control plane CA")
	tlsFiles := ca.WriteFiles(t, dir, m.hostIP)
	cmd := exec.Command(bin, "dev", "--dir", filepath.Join(dir, "cp"), "--listen", m.hostIP+":0", "--interval", "1s",
		"--tls-cert", tlsFiles.Cert, "--tls-key", tlsFiles.Key)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "cp.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start control plane: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(testenv.Short):
			t.Errorf("control plane did not stop on SIGTERM")
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logf.Close()
	})
	cp := &controlPlane{ca: ca}
	var adminFile string
	lines := make(chan string, 64)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // full: nobody reads any more
			}
		}
		_ = cmd.Wait()
	}()
	timeout := time.After(testenv.Long)
	for cp.enrollFile == "" {
		select {
		case l := <-lines:
			if v, ok := strings.CutPrefix(l, "control plane: "); ok {
				cp.url = v
			}
			if v, ok := strings.CutPrefix(l, "admin token file: "); ok {
				adminFile = v
			}
			if v, ok := strings.CutPrefix(l, "enrollment token file: "); ok {
				cp.enrollFile = v
			}
		case <-done:
			t.Fatalf("control plane exited; log:\n%s", mustRead(t, logf.Name()))
		case <-timeout:
			t.Fatalf("control plane did not report its URL; log:\n%s", mustRead(t, logf.Name()))
		}
	}
	if !strings.HasPrefix(cp.url, "https://") || adminFile == "" {
		t.Fatalf("control plane printed URL %q, admin token file %q", cp.url, adminFile)
	}
	cp.adminToken = secretstore.New(strings.TrimSpace(string(mustRead(t, adminFile))))
	return cp
}

// enroll places the enrollment token in the container, 0600, and the
// control plane's CA, as a provisioner would; user-data only names them.
func (cp *controlPlane) enroll(t *testing.T, m *machine, path string) {
	t.Helper()
	m.write(path, mustRead(t, cp.enrollFile), 0o600)
	m.write(controlPlaneCA, cp.ca.PEM, 0o644)
}

func (cp *controlPlane) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.New(api.Options{BaseURL: cp.url, AdminToken: cp.adminToken, RootCAs: cp.ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noTokenIn fails t if text holds the enrollment or admin token.
func (cp *controlPlane) noTokenIn(t *testing.T, where, text string) {
	t.Helper()
	enroll := strings.TrimSpace(string(mustRead(t, cp.enrollFile)))
	for name, v := range map[string]string{"enrollment token": enroll, "admin token": cp.adminToken.Reveal()} {
		if v != "" && strings.Contains(text, v) {
			t.Errorf("%s holds the %s", where, name)
		}
	}
}

// checkOneHost asserts the control plane knows exactly one host, the
// container, registered once: a restarted agent reuses its host ID.
func (cp *controlPlane) checkOneHost(t *testing.T, ctx context.Context) string {
	t.Helper()
	c := cp.client(t)
	hosts, err := c.ListHosts(ctx, api.HostFilter{})
	if err != nil {
		t.Fatalf("list hosts: %v", err)
	}
	if len(hosts) != 1 {
		t.Fatalf("control plane lists %d hosts, want 1: %+v", len(hosts), hosts)
	}
	h := hosts[0]
	if h.Org != "dev" || h.Role != api.RoleWorkspace || h.Status != api.StatusOnline {
		t.Errorf("host = org %q role %q status %q, want dev workspace online", h.Org, h.Role, h.Status)
	}
	events, err := c.Events(ctx, h.ID)
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	n := 0
	for _, e := range events {
		if e.Type == api.EventRegistered {
			n++
		}
	}
	if n != 1 {
		t.Errorf("host %s registered %d times, want once: %+v", h.ID, n, events)
	}
	return h.ID
}
