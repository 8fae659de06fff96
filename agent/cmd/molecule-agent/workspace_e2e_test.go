package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func section(r *status.Report, name string) map[string]any {
	b, _ := json.Marshal(r.Sections[name])
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// The workspace role end to end: the real agent binary runs the stand-in
// molecule-runtime against a stand-in tenant that enforces the registry
// contract (a live token exists, so the bearer is required).
func TestWorkspaceRoleRegistersAndStopsWhenRemoved(t *testing.T) {
	dir := t.TempDir()
	runtimeBin, err := workspacetest.BuildRuntime("go", dir)
	if err != nil {
		t.Fatal(err)
	}
	tenant := workspacetest.NewTenant("org-acme")
	t.Cleanup(tenant.Close)
	const wsID = "6f1c1c3e-9a55-4c8e-8f0a-3c1d2b4a5e6f"
	tenant.AddWorkspace(wsID)
	token := tenant.IssueToken(wsID)
	secretsFile := filepath.Join(dir, "secrets.yaml")
	if err := os.WriteFile(secretsFile, []byte("workspace-auth-token: "+token+"\nopenai-key: sk-test-provider-key-123456\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cfg := fmt.Sprintf(`role: workspace
state_dir: %[1]s/state
run_dir: %[1]s/run
secrets: {source: file, file: %[2]s}
workspace:
  id: %[3]s
  platform_url: %[4]s
  org_id: org-acme
  host_ip: 127.0.0.1
  name: e2e
  runtime: claude-code
  port: %[5]d
  check_interval: 500ms
  configs_dir: %[1]s/configs
  log_path: %[1]s/runtime.log
  secrets: {OPENAI_API_KEY: openai-key}
  proxy: {enabled: true, listen: "127.0.0.1:%[7]d"}
units:
  - name: runtime
    command: %[6]s
    user: ""
    env: {STANDIN_HEARTBEAT_INTERVAL: 1s}
    files:
      - {path: %[1]s/configs/.auth_token, content: "secret:workspace-auth-token"}
    ready: {http: "http://127.0.0.1:%[5]d/.well-known/agent-card.json", status: 200, interval: 200ms}
`, dir, secretsFile, wsID, tenant.URL(), port, runtimeBin, freePort(t))
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &agentProc{log: &lockedBuf{}, socket: dir + "/run/agent.sock", done: make(chan struct{})}
	a.cmd = exec.Command(agentBin, "run", "--config", path)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		<-a.done
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log.String())
		}
	})

	start := time.Now()
	r := a.waitFor(t, "registered", func(r *status.Report) bool {
		return unitOf(r, "runtime").Ready && section(r, "workspace")["registration"] == "registered"
	})
	t.Logf("registered %s after the agent started", time.Since(start).Round(time.Millisecond))
	if got := tenant.Status(wsID); got != "online" {
		t.Errorf("tenant says %s, want online", got)
	}
	env := environOf(t, unitOf(r, "runtime").PID)
	for _, want := range []string{"WORKSPACE_ID=" + wsID, "HOSTNAME=127.0.0.1", "OPENAI_API_KEY=sk-test-provider-key-123456",
		"CONFIGS_DIR=" + dir + "/configs", "WORKSPACE_CONFIG_PATH=" + dir + "/configs"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("runtime env lacks %s", strings.SplitN(want, "=", 2)[0])
		}
	}
	if !strings.Contains(env, "PLATFORM_URL=http://127.0.0.1:") || strings.Contains(env, "PLATFORM_URL="+tenant.URL()+"\n") {
		t.Errorf("PLATFORM_URL should point at the org-header proxy")
	}
	checkFile(t, dir+"/configs/.auth_token", token)
	if b, err := os.ReadFile(dir + "/configs/config.yaml"); err != nil || !strings.Contains(string(b), "name: e2e") {
		t.Errorf("config.yaml: %v %s", err, b)
	}

	statusJSON, _ := json.Marshal(r)
	runtimeLog, _ := os.ReadFile(dir + "/runtime.log")
	leakScan(t, map[string]string{"workspace token": token, "provider key": "sk-test-provider-key-123456"},
		map[string]string{"agent log": a.log.String(), "status API": string(statusJSON), "runtime log": string(runtimeLog)},
		dir, dir+"/configs/.auth_token", secretsFile, dir+"/runtime.log")

	// Removed on the tenant: the runtime is stopped and stays stopped.
	tenant.SetStatus(wsID, "removed")
	r = a.waitFor(t, "runtime stopped", func(r *status.Report) bool {
		return unitOf(r, "runtime").State == supervisor.Stopped
	})
	pid := unitOf(r, "runtime").PID
	time.Sleep(2 * time.Second)
	if u := unitOf(a.status(t), "runtime"); u.State != supervisor.Stopped || u.PID != pid {
		t.Errorf("runtime came back after removal: %+v", u)
	}
}
