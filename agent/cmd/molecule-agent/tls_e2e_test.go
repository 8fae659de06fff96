//go:build unix

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/api/tlstest"
)

// TestAgentOverTLS: the real control plane serves HTTPS from a private
// CA's certificate; the real agent pinning that CA (control_plane.ca_file)
// registers and heartbeats, one pinning another CA never registers and
// says which setting to fix, and a plain-HTTP URL off loopback is refused
// before anything is sent.
func TestAgentOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := tlstest.NewCA(t, "control plane CA"), tlstest.NewCA(t, "another CA")
	tlsDir := filepath.Join(dir, "tls")
	if err := os.Mkdir(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := ca.WriteFiles(t, tlsDir, "127.0.0.1")
	otherCA := filepath.Join(tlsDir, "other-ca.crt")
	if err := os.WriteFile(otherCA, other.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := startCP(t, filepath.Join(dir, "cp"), fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--tls-cert", files.Cert, "--tls-key", files.Key)
	if !strings.HasPrefix(cp.url, "https://") {
		t.Fatalf("control plane with --tls-cert serves %s, want https://", cp.url)
	}
	tok, err := os.ReadFile(filepath.Join(cp.dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := api.New(api.Options{BaseURL: cp.url, AdminToken: secret.New(strings.TrimSpace(string(tok))), CAFile: files.CA})
	if err != nil {
		t.Fatal(err)
	}

	agent := func(name, caFile string) *agentProc {
		d := filepath.Join(dir, name)
		cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
identity: {mode: enrollment, enrollment_token: "file:%[2]s/enrollment-token"}
control_plane: {url: %[3]s, org: dev, ca_file: %[4]s}
units:
  - name: web
    command: /bin/sleep
    args: ["1000"]
`, d, cp.dir, cp.url, caFile)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return runAgent(t, d, writeConfig(t, d, cfg), nil)
	}

	// Pinned to the wrong CA: never registers; the status says what to do.
	wrong := agent("wrong-ca", otherCA)
	r := wrong.waitFor(t, "a TLS error", func(r *status.Report) bool {
		e, _ := section(r, "control_plane")["last_error"].(string)
		return e != ""
	})
	e, _ := section(r, "control_plane")["last_error"].(string)
	for _, want := range []string{"certificate signed by unknown authority", "set control_plane.ca_file to the CA that signed it"} {
		if !strings.Contains(e, want) {
			t.Errorf("wrong-CA agent's last_error %q lacks %q", e, want)
		}
	}
	if section(r, "control_plane")["registered"] == true {
		t.Error("an agent pinning another CA registered")
	}

	// Pinned to the right CA: registered and online.
	good := agent("good", files.CA)
	h := waitHost(t, admin, "online over TLS", func(h api.Host) bool { return h.Status == api.StatusOnline })
	r = good.waitFor(t, "registered", func(r *status.Report) bool { return section(r, "control_plane")["registered"] == true })
	if section(r, "control_plane")["host_id"] != h.ID {
		t.Errorf("agent says host %v, control plane %s", section(r, "control_plane")["host_id"], h.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	if hosts, err := admin.ListHosts(ctx, api.HostFilter{}); err != nil || len(hosts) != 1 {
		t.Errorf("control plane lists %d hosts (%v), want only the agent pinning its CA", len(hosts), err)
	}

	// The certificate renewed on disk: the running control plane serves it
	// from the next handshake on, and the agent keeps heartbeating.
	certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
	for path, b := range map[string][]byte{files.Key: keyPEM, files.Cert: certPEM} {
		if err := os.WriteFile(path+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	blk, _ := pem.Decode(certPEM)
	renewed, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(cp.url, "https://"), &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("handshake after renewal: %v", err)
	}
	served := conn.ConnectionState().PeerCertificates[0].SerialNumber
	_ = conn.Close()
	if served.Cmp(renewed.SerialNumber) != 0 {
		t.Errorf("after renewal the control plane serves serial %s, want the renewed %s", served, renewed.SerialNumber)
	}
	before, _ := section(r, "control_plane")["last_heartbeat"].(string)
	good.waitFor(t, "a heartbeat after the renewal", func(r *status.Report) bool {
		s, _ := section(r, "control_plane")["last_heartbeat"].(string)
		return s != "" && s != before
	})

	// Plain HTTP to a non-loopback address: refused at start, naming the field.
	d := filepath.Join(dir, "plain")
	path := writeConfig(t, t.TempDir(), fmt.Sprintf("state_dir: %[1]s/state\nrun_dir: %[1]s/run\ncontrol_plane: {url: \"http://10.0.0.1:7070\", org: dev}\n", d))
	out, err := exec.Command(agentBin, "run", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("agent with a plain-HTTP control plane: err = %v, want exit 1\n%s", err, out)
	}
	if !strings.Contains(string(out), `control_plane.url: "http://10.0.0.1:7070" is plain HTTP`) {
		t.Errorf("output %q does not name control_plane.url", out)
	}
}
