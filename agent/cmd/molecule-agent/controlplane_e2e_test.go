//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/tunnel/tunneltest"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// readyServer stands in for cloudflared's metrics server: /ready with one
// connection, so the built-in tunnel unit is ready and reports its tunnel.
func readyServer(addr string) int {
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status":200,"readyConnections":1,"connectorId":"7d9c2c36-8a0e-4a47-9d0e-2f9d1a9c3b11"}`)
	})
	if err := http.ListenAndServe(addr, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

type cpProc struct {
	cmd  *exec.Cmd
	url  string
	dir  string
	done chan struct{}
	log  *testenv.Buffer
}

// startCP runs the real control plane binary (`dev`: SQLite, admin and
// enrollment token files) with a 1 s heartbeat interval and extra flags.
func startCP(t testing.TB, dir, listen string, extra ...string) *cpProc {
	t.Helper()
	c := &cpProc{dir: dir, done: make(chan struct{}), log: &testenv.Buffer{}}
	c.cmd = exec.Command(cpBin, append([]string{"dev", "--dir", dir, "--listen", listen, "--interval", "1s",
		"--grace", "500ms", "--flush-window", "1s"}, extra...)...)
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "control plane: "); ok {
			c.url = u
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	if c.url == "" {
		t.Fatalf("control plane printed no URL; log:\n%s", c.log.String())
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			t.Logf("control plane log:\n%s", c.log.String())
		}
	})
	return c
}

func (c *cpProc) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(testenv.Short):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *cpProc) admin(t testing.TB) *api.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(c.dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	cl, err := api.New(api.Options{BaseURL: c.url, AdminToken: secret.New(strings.TrimSpace(string(tok)))})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func hostStatus(t *testing.T, cl *api.Client) (api.Host, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	hosts, err := cl.ListHosts(ctx, api.HostFilter{})
	if err != nil || len(hosts) == 0 {
		return api.Host{}, false
	}
	return hosts[0], true
}

func waitHost(t *testing.T, cl *api.Client, what string, cond func(api.Host) bool) api.Host {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	for time.Now().Before(deadline) {
		if h, ok := hostStatus(t, cl); ok && cond(h) {
			return h
		}
		time.Sleep(50 * time.Millisecond)
	}
	h, _ := hostStatus(t, cl)
	t.Fatalf("timed out waiting for host %s; last %+v", what, h)
	return api.Host{}
}

func countEvents(t *testing.T, cl *api.Client, typ string) int {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	evs, err := cl.Events(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// Issue 5 end to end with both real binaries.
func TestControlPlaneEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cpListen := "127.0.0.1:" + fmt.Sprint(freePort(t))
	cp := startCP(t, filepath.Join(dir, "cp"), cpListen)
	admin := cp.admin(t)

	tok := tunneltest.FakeToken(t)
	secretsFile := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secretsFile, []byte("tunnel-token: "+tok.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	readyAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
secrets: {source: file, file: %[2]s}
identity: {mode: enrollment, enrollment_token: "file:%[1]s/cp/enrollment-token"}
control_plane: {url: %[3]s, org: dev}
units:
  - name: web
    command: /bin/sleep
    args: ["1000"]
  - name: cloudflared
    builtin: cloudflared
    command: %[4]s
    env: {TUNNEL_TOKEN: "secret:tunnel-token", E2E_READY_SERVER: "%[5]s"}
    ready: {http: "http://%[5]s/ready", interval: 200ms}
`, dir, secretsFile, cp.url, self, readyAddr)
	path := writeConfig(t, dir, cfg)
	run := func() *agentProc { return runAgent(t, dir, path, nil) }
	a := run()

	// Registered, heartbeating, listed with its tunnel.
	h := waitHost(t, admin, "online with its tunnel", func(h api.Host) bool {
		return h.Status == api.StatusOnline && h.TunnelID == tok.TunnelID
	})
	if h.Role != "workspace" || h.Org != "dev" || h.Report == nil || len(h.Report.Units) != 2 {
		t.Errorf("host %+v", h)
	}
	r := a.waitFor(t, "registered", func(r *status.Report) bool { return section(r, "control_plane")["registered"] == true })
	if section(r, "control_plane")["host_id"] != h.ID {
		t.Errorf("agent says host %v, control plane %s", section(r, "control_plane")["host_id"], h.ID)
	}

	// Agent killed: offline within 3 intervals + grace (3.5 s), judged on the server.
	_ = a.cmd.Process.Kill()
	<-a.done
	killed := time.Now()
	waitHost(t, admin, "offline", func(h api.Host) bool { return h.Status == api.StatusOffline })
	t.Logf("offline %s after the agent was killed (3 intervals + grace = 3.5 s)", time.Since(killed).Round(100*time.Millisecond))

	// Agent back (same boot): online again without a second registration.
	a = run()
	waitHost(t, admin, "online again", func(h api.Host) bool { return h.Status == api.StatusOnline })
	if n := countEvents(t, admin, "registered"); n != 1 {
		t.Errorf("%d registered events; a restarted agent must reuse its registration", n)
	}

	// Control plane restarted: nobody is marked offline.
	offlineBefore := countEvents(t, admin, "offline")
	cp.stop()
	time.Sleep(2 * time.Second) // the agent keeps its units up and backs off
	cp = startCP(t, filepath.Join(dir, "cp"), cpListen)
	admin = cp.admin(t)
	time.Sleep(5 * time.Second)
	if h, _ := hostStatus(t, admin); h.Status != api.StatusOnline {
		t.Errorf("after a control-plane restart the host is %s", h.Status)
	}
	if n := countEvents(t, admin, "offline"); n != offlineBefore {
		t.Errorf("the restarted control plane marked a host offline")
	}
	if u := unitOf(a.status(t), "web"); !u.Ready {
		t.Errorf("a unit stopped while the control plane was down: %+v", u)
	}

	// Deprovisioned: the reply holds the tunnel ID; the agent gets 410,
	// stops its units and stays idle.
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	dep, err := admin.Deprovision(ctx, h.ID)
	if err != nil {
		t.Fatal(err)
	}
	if dep.TunnelID != tok.TunnelID {
		t.Errorf("deprovision returned tunnel %q, want %q", dep.TunnelID, tok.TunnelID)
	}
	r = a.waitFor(t, "idle", func(r *status.Report) bool {
		return r.Agent.Phase == "idle" && unitOf(r, "web").State == supervisor.Stopped &&
			unitOf(r, "cloudflared").State == supervisor.Stopped
	})
	if section(r, "control_plane")["deprovisioned"] != true {
		t.Errorf("control_plane section: %v", section(r, "control_plane"))
	}
	select {
	case <-a.done:
		t.Error("the agent exited; it should stay idle")
	default:
	}
	// Leak scan: the tunnel token, the host token and the enrollment token
	// appear nowhere but their own files: not in either log, the status API,
	// the control plane's database or its admin responses (which carry the
	// heartbeats).
	var st struct {
		HostToken string `json:"host_token"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "state", "controlplane.json"))
	if err != nil || json.Unmarshal(b, &st) != nil || st.HostToken == "" {
		t.Fatalf("no host token saved: %v", err)
	}
	enroll, _ := os.ReadFile(filepath.Join(dir, "cp", "enrollment-token"))
	hosts, _ := admin.ListHosts(ctx, api.HostFilter{})
	events, _ := admin.Events(ctx, "")
	hostsJSON, _ := json.Marshal(hosts)
	eventsJSON, _ := json.Marshal(events)
	statusJSON, _ := json.Marshal(a.status(t))
	leakScan(t, map[string]string{"tunnel token": tok.Token, "host token": st.HostToken,
		"enrollment token": strings.TrimSpace(string(enroll))},
		map[string]string{"agent log": a.log.String(), "control plane log": cp.log.String(),
			"admin hosts (heartbeats)": string(hostsJSON), "admin events": string(eventsJSON), "status API": string(statusJSON)},
		dir, secretsFile, filepath.Join(dir, "state", "controlplane.json"), filepath.Join(dir, "cp", "enrollment-token"))
	if !strings.Contains(string(hostsJSON), tok.TunnelID) {
		t.Errorf("admin hosts response lacks the heartbeat report (tunnel ID); the leak scan saw no heartbeat")
	}
}
