//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

var agentBin, cpBin string

func TestMain(m *testing.M) {
	if addr := os.Getenv("E2E_READY_SERVER"); addr != "" {
		os.Exit(readyServer(addr))
	}
	dir, err := os.MkdirTemp("", "agent-e2e")
	if err != nil {
		panic(err)
	}
	if agentBin, err = testenv.GoBuild(dir, "molecule-agent", testenv.AgentPackage); err == nil {
		cpBin, err = testenv.GoBuild(dir, "molecule-controlplane", testenv.ControlPlanePackage)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type agentProc struct {
	cmd    *exec.Cmd
	log    *testenv.Buffer
	socket string
	done   chan struct{}
}

// writeConfig writes agent.yaml into dir and returns its path.
func writeConfig(t testing.TB, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runAgent runs the agent binary on the config at path, its run_dir being
// dir/run. env nil inherits the test's environment. The agent is killed when
// the test ends, and its log shown if the test failed.
func runAgent(t testing.TB, dir, path string, env []string) *agentProc {
	t.Helper()
	a := &agentProc{log: &testenv.Buffer{}, socket: dir + "/run/agent.sock", done: make(chan struct{})}
	a.cmd = exec.Command(agentBin, "run", "--config", path)
	a.cmd.Env = env
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
	return a
}

// startAgent runs the agent with the given units (YAML list items).
func startAgent(t *testing.T, units string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf("state_dir: %s/state\nrun_dir: %s/run\nunits:\n%s", dir, dir, units)
	return runAgent(t, dir, writeConfig(t, dir, cfg), nil)
}

func (a *agentProc) status(t testing.TB) *status.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()
	r, err := status.Get(ctx, a.socket)
	if err != nil {
		return nil
	}
	return r
}

// waitUnits polls the status API until every unit satisfies cond.
func (a *agentProc) waitUnits(t *testing.T, what string, cond func(st string, ready bool) bool) *status.Report {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	for time.Now().Before(deadline) {
		if r := a.status(t); r != nil && len(r.Units) > 0 {
			all := true
			for _, u := range r.Units {
				all = all && cond(string(u.State), u.Ready)
			}
			if all {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for units to be %s", what)
	return nil
}

func rssKiB(t testing.TB, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func TestSIGTERMStopsEveryUnitAndExitsZero(t *testing.T) {
	a := startAgent(t, `
  - name: db
    command: /bin/sleep
    args: ["1000"]
  - name: app
    command: /bin/sh
    args: ["-c", "trap '' TERM; sleep 1000 & wait"]
    after: [db]
    stop: {grace: 500ms}
`)
	r := a.waitUnits(t, "ready", func(_ string, ready bool) bool { return ready })
	var pids []int
	for _, u := range r.Units {
		pids = append(pids, u.PID)
	}
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(testenv.Long):
		t.Fatal("agent did not exit after SIGTERM")
	}
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	for _, pid := range pids {
		if err := syscall.Kill(-pid, 0); err == nil {
			t.Errorf("process group %d still alive after the agent exited", pid)
		}
	}
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Errorf("status socket left behind: %v", err)
	}
	logs := a.log.String()
	if i, j := strings.Index(logs, `"msg":"agent stopping`), strings.Index(logs, `"msg":"agent stopped"`); i < 0 || j < i {
		t.Errorf("log lacks the stopping/stopped records")
	}
}

func TestFloodingChildDoesNotGrowAgentMemory(t *testing.T) {
	a := startAgent(t, `
  - name: flood
    command: /usr/bin/yes
    args: ["`+strings.Repeat("flood-", 20)+`"]
`)
	a.waitUnits(t, "ready", func(_ string, ready bool) bool { return ready })
	time.Sleep(time.Second) // let the flood reach steady state before the first sample
	before := rssKiB(t, a.cmd.Process.Pid)
	time.Sleep(10 * time.Second)
	after := rssKiB(t, a.cmd.Process.Pid)
	t.Logf("agent RSS %d KiB → %d KiB over 10 s of flooding", before, after)
	if after-before > 4*1024 {
		t.Errorf("agent RSS grew by %d KiB while a child flooded stdout, want < 4 MiB", after-before)
	}
	logs := a.log.String()
	if !strings.Contains(logs, `"dropped_lines"`) {
		t.Error("no dropped_lines record: the rate limit did not report what it dropped")
	}
	if n := strings.Count(logs, "\n"); n > 200*12+1000+100 {
		t.Errorf("agent logged %d lines in ~11 s, more than the rate limit allows", n)
	}
}

func TestStatusCommandPrintsTableAndJSON(t *testing.T) {
	a := startAgent(t, `
  - name: web
    command: /bin/sleep
    args: ["1000"]
`)
	a.waitUnits(t, "ready", func(_ string, ready bool) bool { return ready })
	out, err := exec.Command(agentBin, "status", "--socket", a.socket).CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "UNIT") || !regexpLine(string(out), "web", "exec", "ready", "yes") {
		t.Errorf("status table:\n%s", out)
	}
	out, err = exec.Command(agentBin, "status", "--json", "--socket", a.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	var r status.Report
	if err := json.Unmarshal(out, &r); err != nil || len(r.Units) != 1 || r.Units[0].Name != "web" || r.Agent.Phase != "running" {
		t.Errorf("status --json = %s (err %v)", out, err)
	}
}

func regexpLine(out string, fields ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(fields) {
			ok := true
			for i, want := range fields {
				ok = ok && f[i] == want
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func TestBadConfigNamesTheField(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.yaml")
	bad := "units:\n  - name: a\n    command: x\n    restart:\n      initial_delay: 5s\n      max_delay: 1s\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(agentBin, "run", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("err = %v, want exit 1", err)
	}
	if !strings.Contains(string(out), "units[0].restart.max_delay: must be ≥ initial_delay") {
		t.Errorf("output %q does not name the field", out)
	}
	out, _ = exec.Command(agentBin, "status", "--socket", dir+"/none.sock").CombinedOutput()
	if !strings.Contains(string(out), "cannot reach the agent") {
		t.Errorf("status without agent: %q", out)
	}
}
