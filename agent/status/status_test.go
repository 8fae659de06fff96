//go:build unix

package status

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSocketServesReportWith0600(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	started := time.Now().Add(-time.Minute)
	s, err := Listen(path, func() Report {
		return Report{Agent: Agent{Version: "v1", PID: 42, Started: started, Phase: "running"},
			Units: []supervisor.UnitStatus{{Name: "web", Kind: "exec", State: supervisor.Ready, Ready: true, PID: 7}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	defer func() {
		_ = s.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v (err %v), want 0600", fi.Mode().Perm(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := Get(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Agent.PID != 42 || len(r.Units) != 1 || r.Units[0].Name != "web" {
		t.Errorf("report = %+v", r)
	}
	// A second agent on the same socket is refused while the first serves.
	if _, err := Listen(path, func() Report { return Report{} }); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("second Listen: %v, want 'another agent'", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, nil, 0o600); err != nil { // left by a dead agent
		t.Fatal(err)
	}
	s, err := Listen(path, func() Report { return Report{} })
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	_ = s.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket not removed on close: %v", err)
	}
}

func TestWriteTable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	r := &Report{
		Agent:    Agent{Version: "v1", PID: 1, Started: now.Add(-90 * time.Second), Phase: "running"},
		Sections: map[string]any{"control_plane": map[string]any{"registered": true, "host_id": "h1"}},
		Units: []supervisor.UnitStatus{
			{Name: "cloudflared", Kind: "exec", State: supervisor.Running, PID: 99, Since: now.Add(-5 * time.Second),
				Detail: "0 connections", Facets: supervisor.Facets{Tunnel: &supervisor.TunnelFacet{ID: "t-123"}}},
			{Name: "platform", Kind: "container", State: supervisor.Blocked, Since: now,
				Detail: "parameter admin-token missing under /p"},
		},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, r, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"agent v1  pid 1  running  up 1m30s", "control_plane: host_id=h1 registered=true",
		"cloudflared", "0 connections tunnel_id=t-123", "platform", "blocked", "parameter admin-token missing under /p"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
