//go:build unix

package bootstrap

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// fakeAgent serves a status report the test changes, over the agent's
// real status API.
type fakeAgent struct {
	mu sync.Mutex
	r  status.Report
}

func (f *fakeAgent) set(fn func(r *status.Report)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.r)
}

func (f *fakeAgent) report() status.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.r
}

func serveStatus(t *testing.T, f *fakeAgent) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	srv, err := status.Listen(path, f.report)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve() }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return path
}

func TestWaitPhases(t *testing.T) {
	f := &fakeAgent{r: status.Report{Agent: status.Agent{Phase: "starting", PID: 42, Version: "v1"},
		Units: []supervisor.UnitStatus{{Name: "db", State: supervisor.Starting}, {Name: "app", State: supervisor.Waiting}}}}
	sock := serveStatus(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Short)
	defer cancel()

	// The agent moves on while the waits poll.
	go func() {
		f.set(func(r *status.Report) { r.Agent.Phase = "running" })
		f.set(func(r *status.Report) {
			r.Sections = map[string]any{ControlPlaneSection: map[string]any{"host_id": "h-7"}}
		})
		f.set(func(r *status.Report) {
			for i := range r.Units {
				r.Units[i].State, r.Units[i].Ready = supervisor.Ready, true
			}
		})
	}()
	f2 := &fakeAgent{r: status.Report{Agent: status.Agent{Phase: "running"},
		Sections: map[string]any{"fleet": map[string]any{"HostID": "h-9", "Registered": true}}}}
	if _, why, err := waitFor(ctx, serveStatus(t, f2), 5*time.Millisecond, "registered", registered); err != nil || why != "host h-9" {
		t.Errorf("fleet-style section: got %q, %v; want host h-9", why, err)
	}
	steps := []struct {
		what, want string
		c          cond
	}{
		{"running", "pid 42, version v1", agentRunning},
		{"registered", "host h-7", registered},
		{"units", "2/2 units ready", unitsReady},
	}
	for _, s := range steps {
		_, why, err := waitFor(ctx, sock, 5*time.Millisecond, s.what, s.c)
		if err != nil {
			t.Fatalf("wait %s: %v", s.what, err)
		}
		if why != s.want {
			t.Errorf("wait %s: got %q, want %q", s.what, why, s.want)
		}
	}
}

func TestWaitFailures(t *testing.T) {
	tests := []struct {
		name    string
		r       status.Report
		c       cond
		wantErr string
	}{
		{"failed unit ends the wait", status.Report{Agent: status.Agent{Phase: "running"},
			Units: []supervisor.UnitStatus{{Name: "platform", State: supervisor.Failed, LastError: "exit status 3", Detail: "restart budget spent"}}},
			unitsReady, "unit platform failed: restart budget spent (exit status 3)"},
		{"not ready times out with the reason", status.Report{Agent: status.Agent{Phase: "running"},
			Units: []supervisor.UnitStatus{{Name: "platform", State: supervisor.Blocked, Detail: "secret tunnel-token missing"}}},
			unitsReady, "timed out waiting for units: unit platform is blocked: secret tunnel-token missing"},
		{"registration error is shown on timeout", status.Report{Agent: status.Agent{Phase: "running"},
			Sections: map[string]any{ControlPlaneSection: map[string]any{"last_error": "401 unknown enrollment token"}}},
			registered, "not registered: 401 unknown enrollment token"},
		{"fleet section style: registered false", status.Report{Agent: status.Agent{Phase: "running"},
			Sections: map[string]any{"fleet": map[string]any{"HostID": "h-1", "Registered": false, "LastError": "control plane unreachable"}}},
			registered, "not registered: control plane unreachable"},
		{"gone", status.Report{Agent: status.Agent{Phase: "running"},
			Sections: map[string]any{"fleet": map[string]any{"HostID": "h-1", "Gone": true}}},
			registered, "deprovisioned (410)"},
		{"deprovisioned flag", status.Report{Agent: status.Agent{Phase: "running"},
			Sections: map[string]any{ControlPlaneSection: map[string]any{"host_id": "h-1", "registered": false, "deprovisioned": true}}},
			registered, "deprovisioned (410)"},
		{"deprovisioned host", status.Report{Agent: status.Agent{Phase: "idle"}},
			registered, "deprovisioned"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeAgent{r: tt.r}
			sock := serveStatus(t, f)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, _, err := waitFor(ctx, sock, 10*time.Millisecond, "units", tt.c)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestWaitNoAgent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err := waitFor(ctx, filepath.Join(t.TempDir(), "none.sock"), 10*time.Millisecond, "the agent to run", agentRunning)
	if err == nil || !strings.Contains(err.Error(), "timed out waiting for the agent to run: cannot reach the agent") {
		t.Errorf("err = %v", err)
	}
}

func TestPickLogLine(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"agent's fatal error wins", []string{
			`{"level":"INFO","msg":"agent starting"}`,
			"molecule-agent: workspace.id and workspace.platform_url are required",
			"molecule-agent.service: Main process exited, code=exited, status=1/FAILURE",
			"Failed to start molecule-agent.service - molecule host agent.",
		}, "molecule-agent: workspace.id and workspace.platform_url are required"},
		{"else the last line not from systemd", []string{
			`{"level":"ERROR","msg":"status socket: address in use"}`,
			"molecule-agent.service: Failed with result 'exit-code'.",
		}, `{"level":"ERROR","msg":"status socket: address in use"}`},
		{"nothing", []string{"", "molecule-agent.service: Scheduled restart job"}, "no log"},
		{"long line cut", []string{"molecule-agent: " + strings.Repeat("x", 400)}, "molecule-agent: " + strings.Repeat("x", 284) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickLogLine(tt.lines); got != tt.want {
				t.Errorf("pickLogLine = %q, want %q", got, tt.want)
			}
		})
	}
}
