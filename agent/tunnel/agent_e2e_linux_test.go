//go:build unix

package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/google/uuid"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/tunnel/tunneltest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// agentBinEnv carries the agent binary, built outside the namespace, inside.
const agentBinEnv = "MOLECULE_TEST_AGENT_BIN"

// agentBinary builds molecule-agent once per test process (outside the
// namespace: building may need the module proxy) and exports its path.
func agentBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(agentBinEnv); p != "" {
		return p
	}
	dir := t.TempDir()
	bin, err := testenv.GoBuild(dir, "molecule-agent", testenv.AgentPackage)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(agentBinEnv, bin)
	return bin
}

type agentRun struct {
	cmd     *exec.Cmd
	log     *testenv.Buffer
	socket  string
	secrets string
	done    chan struct{}
}

// runAgent runs `molecule-agent run` supervising u, with a secrets file
// source (re-read every 200ms) holding tunnel-token = token.
func runAgent(t *testing.T, bin string, u config.Unit, token string) *agentRun {
	t.Helper()
	dir := t.TempDir()
	a := &agentRun{log: &testenv.Buffer{}, socket: dir + "/run/agent.sock", done: make(chan struct{}),
		secrets: filepath.Join(dir, "secrets.yaml")}
	a.setToken(t, token)
	cfg, err := yaml.Marshal(map[string]any{
		"state_dir": dir + "/state", "run_dir": dir + "/run",
		"secrets": map[string]string{"source": "file", "file": a.secrets, "refresh": "200ms"},
		"units":   []config.Unit{u},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin, "run", "--config", path)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.done
		if t.Failed() {
			t.Logf("agent log:\n%s", a.log.String())
		}
	})
	return a
}

// setToken (re)writes the secrets file atomically.
func (a *agentRun) setToken(t *testing.T, token string) {
	t.Helper()
	b, err := yaml.Marshal(map[string]string{DefaultSecretName: token})
	if err != nil {
		t.Fatal(err)
	}
	tmp := a.secrets + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, a.secrets); err != nil {
		t.Fatal(err)
	}
}

// statusCLI runs `molecule-agent status` against the agent's socket.
func (a *agentRun) statusCLI(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"status", "--socket", a.socket}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("molecule-agent status: %v\n%s", err, out)
	}
	return string(out)
}

// waitUnit polls the status API until the unit satisfies cond.
func (a *agentRun) waitUnit(t *testing.T, what string, cond func(supervisor.UnitStatus) bool) supervisor.UnitStatus {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	var last supervisor.UnitStatus
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
		r, err := status.Get(ctx, a.socket)
		cancel()
		if err == nil && len(r.Units) == 1 {
			last = r.Units[0]
			if cond(last) {
				return last
			}
		}
		select {
		case <-a.done:
			t.Fatalf("agent exited while waiting for cloudflared to be %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("cloudflared not %s within %v; last status %+v", what, testenv.Long, last)
	return last
}

// waitAnswer polls until cloudflared's /ready answers (200 or 503).
func waitAnswer(t *testing.T, p *Probe) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	for {
		_, err := p.Fetch(ctx)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("cloudflared's metrics port not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// TestAgentSupervisesCloudflared runs the real agent with the real pinned
// cloudflared as its unit, with a valid fake token and an unreachable edge,
// in an empty network namespace.
func TestAgentSupervisesCloudflared(t *testing.T) {
	testenv.RequireNetns(t)
	cf := tunneltest.Binary(t)
	agent := agentBinary(t)
	if !tunneltest.InEmptyNetns(t) {
		return
	}
	tok := tunneltest.FakeToken(t)
	opts := UnitOptions{Binary: cf, MetricsPort: freePort(t), GracePeriod: 2 * time.Second, Edge: []string{"127.0.0.1:1"}}
	u, err := opts.Unit()
	if err != nil {
		t.Fatal(err)
	}
	a := runAgent(t, agent, u, tok.Token)

	// Running, not ready, 0 connections, with its tunnel ID in status.
	st := a.waitUnit(t, "running, not ready, 0 connections", func(s supervisor.UnitStatus) bool {
		return s.State == supervisor.Running && !s.Ready && s.PID > 0 && s.Detail == "0 connections"
	})
	if st.Tunnel == nil || st.Tunnel.ID != tok.TunnelID || st.Tunnel.ReadyConnections != 0 {
		t.Fatalf("status tunnel facet = %+v, want ID %s and 0 ready connections", st.Tunnel, tok.TunnelID)
	}
	firstConnector := st.Tunnel.ConnectorID
	if _, err := uuid.Parse(firstConnector); err != nil {
		t.Errorf("status connector_id %q is not a UUID", firstConnector)
	}
	table := a.statusCLI(t, agent)
	for _, want := range []string{"cloudflared", "running", "0 connections", "tunnel_id=" + tok.TunnelID} {
		if !strings.Contains(table, want) {
			t.Errorf("molecule-agent status lacks %q:\n%s", want, table)
		}
	}
	statusJSON := a.statusCLI(t, agent, "--json")
	probe := NewProbe(opts.metricsPort(), nil)
	waitAnswer(t, probe)
	if ready, detail, err := probe.Ready(context.Background()); ready || detail != "0 connections" || err != nil {
		t.Errorf("probe.Ready = %v, %q, %v; want false, %q, nil", ready, detail, err, "0 connections")
	}
	firstPID := st.PID
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", firstPID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(cmdline, []byte(cf+"\x00tunnel\x00")) {
		t.Fatalf("pid %d runs %q, want %s tunnel …", firstPID, cmdline, cf)
	}

	// kill -9: restarted, with a new process, and the metrics port answers again.
	killed := time.Now()
	if err := syscall.Kill(firstPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st = a.waitUnit(t, "restarted", func(s supervisor.UnitStatus) bool {
		return s.Restarts == 1 && s.PID > 0 && s.PID != firstPID && s.State == supervisor.Running
	})
	if !strings.Contains(st.LastExit, "killed") {
		t.Errorf("LastExit = %q, want the SIGKILL", st.LastExit)
	}
	waitAnswer(t, probe)
	t.Logf("measured: kill -9 → restarted and metrics port answering in %v", time.Since(killed).Round(time.Millisecond))
	// Status moves on to the new run's connector.
	a.waitUnit(t, "reporting the new connector", func(s supervisor.UnitStatus) bool {
		return s.PID == st.PID && s.Tunnel != nil && s.Tunnel.ConnectorID != "" && s.Tunnel.ConnectorID != firstConnector
	})

	// The token is in neither argv nor the agent's log.
	secondPID := st.PID
	cmdline, err = os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", secondPID))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{tok.Token, tok.Secret} {
		if bytes.Contains(cmdline, []byte(leak)) {
			t.Errorf("cloudflared's cmdline contains the token")
		}
		if strings.Contains(a.log.String(), leak) {
			t.Errorf("the agent's log contains the token")
		}
		if strings.Contains(table+statusJSON, leak) {
			t.Errorf("molecule-agent status shows the token")
		}
	}
	if !strings.Contains(a.log.String(), "Starting tunnel tunnelID="+tok.TunnelID) {
		t.Errorf("cloudflared's output is not in the agent's log")
	}

	// SIGTERM to the agent stops cloudflared within its grace and exits 0.
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(u.Stop.Grace.Duration + testenv.Short):
		t.Fatalf("agent still running %v after SIGTERM", u.Stop.Grace.Duration+testenv.Short)
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("agent exit code = %d, want 0", code)
	}
	if !gone(secondPID) {
		t.Errorf("cloudflared pid %d still exists after the agent exited", secondPID)
	}
	if !strings.Contains(a.log.String(), "Initiating graceful shutdown") {
		t.Errorf("cloudflared did not shut down gracefully (no \"Initiating graceful shutdown\" in the log)")
	}
	for _, leak := range []string{tok.Token, tok.Secret} {
		if strings.Contains(a.log.String(), leak) {
			t.Errorf("the agent's log contains the token")
		}
	}
}

// TestAgentMalformedTokenBlocksUntilFixed: a malformed token is a clear,
// permanent error before cloudflared ever starts (no restart loop); fixing
// the secret starts it.
func TestAgentMalformedTokenBlocksUntilFixed(t *testing.T) {
	testenv.RequireNetns(t)
	cf := tunneltest.Binary(t)
	agent := agentBinary(t)
	if !tunneltest.InEmptyNetns(t) {
		return
	}
	const bad = "bm90LWEtdHVubmVsLXRva2Vu" // base64 of "not-a-tunnel-token"
	u, err := UnitOptions{Binary: cf, MetricsPort: freePort(t), GracePeriod: time.Second, Edge: []string{"127.0.0.1:1"}}.Unit()
	if err != nil {
		t.Fatal(err)
	}
	a := runAgent(t, agent, u, bad)
	st := a.waitUnit(t, "blocked", func(s supervisor.UnitStatus) bool { return s.State == supervisor.Blocked })
	const want = "tunnel token under tunnel-token is not a cloudflared token ("
	if !strings.HasPrefix(st.Detail, want) || st.PID != 0 || st.Restarts != 0 {
		t.Errorf("status = %q, pid %d, %d restarts; want %q…, no process, 0 restarts", st.Detail, st.PID, st.Restarts, want)
	}
	table := a.statusCLI(t, agent)
	if !strings.Contains(table, "blocked") || !strings.Contains(table, "is not a cloudflared token") {
		t.Errorf("molecule-agent status does not show the token error:\n%s", table)
	}

	// Fix the secret: the agent re-reads it and starts cloudflared.
	tok := tunneltest.FakeToken(t)
	a.setToken(t, tok.Token)
	st = a.waitUnit(t, "running with the new tunnel", func(s supervisor.UnitStatus) bool {
		return s.State == supervisor.Running && s.PID > 0 && s.Tunnel != nil && s.Tunnel.ID == tok.TunnelID
	})
	if st.Restarts != 0 {
		t.Errorf("restarts = %d, want 0 (cloudflared never ran with the bad token)", st.Restarts)
	}
	for deadline := time.Now().Add(testenv.Long); !strings.Contains(a.log.String(), "Starting tunnel tunnelID="+tok.TunnelID); {
		if time.Now().After(deadline) {
			t.Fatalf("cloudflared's start is not in the agent's log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	log := a.log.String()
	if strings.Count(log, "Starting tunnel tunnelID=") != 1 {
		t.Errorf("cloudflared started %d times, want once (only with the fixed token)", strings.Count(log, "Starting tunnel tunnelID="))
	}
	for _, leak := range []string{bad, tok.Token, tok.Secret} {
		if strings.Contains(log, leak) || strings.Contains(table, leak) {
			t.Errorf("the agent's log or status shows a token")
		}
	}
}
