//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
)

func freePort(t testing.TB) int {
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

type workspaceRig struct {
	a           *agentProc
	dir         string
	tenant      *workspacetest.Tenant
	secretsFile string
}

const wsID = "6f1c1c3e-9a55-4c8e-8f0a-3c1d2b4a5e6f"

// startWorkspaceAgent runs the real agent binary with the workspace role:
// the stand-in molecule-runtime against a stand-in tenant that enforces the
// registry contract. fileToken is what the secrets source holds.
func startWorkspaceAgent(t *testing.T, tenant *workspacetest.Tenant, fileToken string) *workspaceRig {
	t.Helper()
	dir := t.TempDir()
	runtimeBin, err := workspacetest.BuildRuntime(dir)
	if err != nil {
		t.Fatal(err)
	}
	rig := &workspaceRig{dir: dir, tenant: tenant, secretsFile: filepath.Join(dir, "secrets.yaml")}
	rig.writeToken(t, fileToken)
	port := freePort(t)
	cfg := fmt.Sprintf(`role: workspace
state_dir: %[1]s/state
run_dir: %[1]s/run
secrets: {source: file, file: %[2]s, refresh: 1s}
workspace:
  id: %[3]s
  platform_url: %[4]s
  org_id: org-acme
  host_ip: 10.77.0.3
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
    env: {STANDIN_HEARTBEAT_INTERVAL: 1s, STANDIN_EXEC_LOG: %[1]s/exec.log}
    ready: {http: "http://127.0.0.1:%[5]d/.well-known/agent-card.json", status: 200, interval: 200ms}
`, dir, rig.secretsFile, wsID, tenant.URL(), port, runtimeBin, freePort(t))
	a := runAgent(t, dir, writeConfig(t, dir, cfg), nil)
	rig.a = a
	return rig
}

func (r *workspaceRig) writeToken(t *testing.T, token string) {
	t.Helper()
	body := "openai-key: sk-test-provider-key-123456\n"
	if token != "" { // "": token flow (b), no token parameter
		body += "workspace-auth-token: " + token + "\n"
	}
	tmp := r.secretsFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, r.secretsFile); err != nil {
		t.Fatal(err)
	}
}

func TestWorkspaceRoleRegistersAndStopsWhenRemoved(t *testing.T) {
	tenant := workspacetest.NewTenant("org-acme")
	t.Cleanup(tenant.Close)
	tenant.AddWorkspace(wsID)
	token := tenant.IssueToken(wsID)
	rig := startWorkspaceAgent(t, tenant, token)
	a, dir, secretsFile := rig.a, rig.dir, rig.secretsFile

	start := time.Now()
	r := a.waitFor(t, "registered", func(r *status.Report) bool {
		return unitOf(r, "runtime").Ready && section(r, "workspace")["registration"] == "registered"
	})
	t.Logf("registered %s after the agent started", time.Since(start).Round(time.Millisecond))
	if got := tenant.Status(wsID); got != "online" {
		t.Errorf("tenant says %s, want online", got)
	}
	env := environOf(t, unitOf(r, "runtime").PID)
	for _, want := range []string{"WORKSPACE_ID=" + wsID, "HOSTNAME=10.77.0.3", "OPENAI_API_KEY=sk-test-provider-key-123456",
		"CONFIGS_DIR=" + dir + "/configs", "WORKSPACE_CONFIG_PATH=" + dir + "/configs"} {
		if !strings.Contains(env, want+"\n") {
			t.Errorf("runtime env lacks %s", strings.SplitN(want, "=", 2)[0])
		}
	}
	if !strings.Contains(env, "PLATFORM_URL=http://127.0.0.1:") || strings.Contains(env, "PLATFORM_URL="+tenant.URL()+"\n") {
		t.Errorf("PLATFORM_URL should point at the org-header proxy")
	}
	checkFile(t, dir+"/configs/.auth_token", token)
	// The token file follows workspace.configs_dir: one copy, no other.
	var copies []string
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == ".auth_token" {
			copies = append(copies, p)
		}
		return nil
	})
	if len(copies) != 1 {
		t.Errorf("token files under the agent's dirs: %v, want only %s/configs/.auth_token", copies, dir)
	}
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

	// The agent restarts: the removed workspace's runtime never runs again
	// (its exec log counts every start), and no token is minted for it.
	execs := func() int { b, _ := os.ReadFile(dir + "/exec.log"); return strings.Count(string(b), "\n") }
	if n := execs(); n != 1 {
		t.Fatalf("runtime starts before the agent restart: %d, want 1", n)
	}
	_ = a.cmd.Process.Kill()
	<-a.done
	a = runAgent(t, dir, dir+"/agent.yaml", nil)
	a.waitFor(t, "removed and stopped after the restart", func(r *status.Report) bool {
		return section(r, "workspace")["registration"] == "removed" && unitOf(r, "runtime").State == supervisor.Stopped
	})
	if n := execs(); n != 1 {
		t.Errorf("the removed workspace's runtime was started after the agent restart (%d starts)", n)
	}
	if strings.Contains(a.log.String(), `"msg":"unit started"`) {
		t.Errorf("the agent started a unit of a removed workspace after its restart")
	}
	if n := tenant.Minted(wsID); n != 0 {
		t.Errorf("tokens minted for the removed workspace: %d", n)
	}
}

// A stale token in SSM: the runtime's register gets 401; once the new token
// is in the secrets source the runtime is restarted with it and registers,
// and nothing loops meanwhile.
func TestWorkspaceStaleTokenRecoversWithoutLoop(t *testing.T) {
	tenant := workspacetest.NewTenant("org-acme")
	t.Cleanup(tenant.Close)
	tenant.AddWorkspace(wsID)
	good := tenant.IssueToken(wsID)
	rig := startWorkspaceAgent(t, tenant, "stale-token-0000000000000000000000000000000")
	rig.a.waitFor(t, "register rejected", func(r *status.Report) bool {
		return section(r, "workspace")["register_status"] == float64(401)
	})
	r := rig.a.status(t)
	if ws := section(r, "workspace"); ws["registration"] == "registered" {
		t.Fatalf("registered with a stale token: %v", ws)
	}
	time.Sleep(2 * time.Second) // no restart loop while the token is still stale
	if n := tenant.Registrations(wsID); n > 2 {
		t.Errorf("%d register attempts with a stale token: the agent loops", n)
	}
	rig.writeToken(t, good)
	rig.a.waitFor(t, "registered with the new token", func(r *status.Report) bool {
		return section(r, "workspace")["registration"] == "registered" && unitOf(r, "runtime").Ready
	})
	checkFile(t, rig.dir+"/configs/.auth_token", good)
}

// Token flow (b) through the agent binary: no token parameter. The
// runtime's first register mints the token and the runtime writes it; the
// agent keeps it through kill -9 of the agent, kill -9 of the runtime and a
// SIGTERM of the agent, in that order, and the platform mints one token.
// Nothing is logged as ERROR on the way.
func TestWorkspacePlatformMintedTokenSurvivesKills(t *testing.T) {
	tenant := workspacetest.NewTenant("org-acme")
	t.Cleanup(tenant.Close)
	tenant.AddWorkspace(wsID)
	rig := startWorkspaceAgent(t, tenant, "")
	registered := func(a *agentProc, what string) *status.Report {
		t.Helper()
		return a.waitFor(t, what, func(r *status.Report) bool {
			return unitOf(r, "runtime").Ready && section(r, "workspace")["registration"] == "registered"
		})
	}
	registered(rig.a, "registered by the platform-minted token")
	toks := tenant.Tokens(wsID)
	if len(toks) != 1 {
		t.Fatalf("live tokens: %d, want 1", len(toks))
	}
	checkFile(t, rig.dir+"/configs/.auth_token", toks[0])
	if strings.Contains(rig.a.log.String(), `"level":"ERROR"`) {
		t.Errorf("the agent logged an ERROR on a boot without errors")
	}
	cfg := rig.dir + "/agent.yaml"

	_ = rig.a.cmd.Process.Kill() // kill -9 of the agent: the runtime dies with it
	<-rig.a.done
	a := runAgent(t, rig.dir, cfg, nil)
	r := registered(a, "registered after kill -9 of the agent")
	checkFile(t, rig.dir+"/configs/.auth_token", toks[0])

	pid := unitOf(r, "runtime").PID
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "a new runtime registered", func(r *status.Report) bool {
		u := unitOf(r, "runtime")
		return u.PID != pid && u.Ready && section(r, "workspace")["registration"] == "registered"
	})
	checkFile(t, rig.dir+"/configs/.auth_token", toks[0])

	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	checkFile(t, rig.dir+"/configs/.auth_token", toks[0])
	a = runAgent(t, rig.dir, cfg, nil)
	registered(a, "registered after SIGTERM of the agent")
	checkFile(t, rig.dir+"/configs/.auth_token", toks[0])
	if n := tenant.Minted(wsID); n != 1 {
		t.Errorf("tokens minted: %d, want 1", n)
	}
	runtimeLog, _ := os.ReadFile(rig.dir + "/runtime.log")
	leakScan(t, map[string]string{"workspace token": toks[0]},
		map[string]string{"agent log": a.log.String(), "runtime log": string(runtimeLog)},
		rig.dir, rig.dir+"/configs/.auth_token", rig.secretsFile, rig.dir+"/runtime.log")
}

// A rotated workspace secret (given to the runtime as env, not through a
// unit file) restarts the runtime with the new value.
func TestWorkspaceSecretRotationRestartsRuntime(t *testing.T) {
	tenant := workspacetest.NewTenant("org-acme")
	t.Cleanup(tenant.Close)
	tenant.AddWorkspace(wsID)
	token := tenant.IssueToken(wsID)
	rig := startWorkspaceAgent(t, tenant, token)
	r := rig.a.waitFor(t, "registered", func(r *status.Report) bool {
		return unitOf(r, "runtime").Ready && section(r, "workspace")["registration"] == "registered"
	})
	before := unitOf(r, "runtime").PID
	body := "workspace-auth-token: " + token + "\nopenai-key: sk-test-provider-key-rotated\n"
	if err := os.WriteFile(rig.secretsFile+".tmp", []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(rig.secretsFile+".tmp", rig.secretsFile); err != nil {
		t.Fatal(err)
	}
	r = rig.a.waitFor(t, "runtime restarted", func(r *status.Report) bool {
		u := unitOf(r, "runtime")
		return u.Ready && u.PID != before
	})
	if env := environOf(t, unitOf(r, "runtime").PID); !strings.Contains(env, "OPENAI_API_KEY=sk-test-provider-key-rotated\n") {
		t.Errorf("restarted runtime lacks the rotated OPENAI_API_KEY")
	}
}
