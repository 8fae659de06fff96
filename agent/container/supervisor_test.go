//go:build unix

package container

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/restart"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// waitUnit polls the supervisor until the unit's status satisfies ok.
func waitUnit(t *testing.T, s *supervisor.Supervisor, what string, ok func(supervisor.UnitStatus) bool) supervisor.UnitStatus {
	t.Helper()
	deadline := time.NewTimer(testenv.Long)
	defer deadline.Stop()
	for {
		changed := s.Changed()
		for _, st := range s.Status() {
			if st.Name == "app" && ok(st) {
				return st
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("unit never became %s: %+v", what, s.Status())
		}
	}
}

// TestSupervisedUpdate runs the driver under the real supervisor and updates
// through Supervisor.Replace: v1 → v2 commits, v2 → v3 rolls back, and the
// unit stays supervised throughout.
func TestSupervisedUpdate(t *testing.T) {
	r := newRig(t)
	d := r.driver(r.apps.V1, func(o *Options) { o.UpdateWindow = 3 * time.Second })
	env := staticEnv("APP_SECRET=s")
	s, err := supervisor.New(slog.New(slog.NewTextHandler(t.Output(), nil)), []supervisor.Spec{{
		Name: "app", Kind: "container", Driver: d, Prober: r.prober(),
		ProbeInterval: 100 * time.Millisecond, Grace: 5 * time.Second,
		Restart: restart.Policy{Mode: restart.Always, InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second,
			StableAfter: time.Minute, Budget: 5, Window: time.Minute},
		Prepare: env, Reporters: []supervisor.Reporter{d.Report},
	}})
	if err != nil {
		t.Fatalf("supervisor.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.Start(ctx)
	defer s.Stop()
	first := waitUnit(t, s, "ready", func(st supervisor.UnitStatus) bool { return st.Ready })
	if c := first.Container; c == nil || c.Image != r.apps.V1 {
		t.Errorf("status container facet = %+v, want image %s", c, r.apps.V1)
	}

	if err := s.Replace(ctx, "app", d.UpdateFunc(r.apps.V2, env, r.prober())); err != nil {
		t.Fatalf("Replace v1→v2: %v", err)
	}
	r.waitBody("/version", "v2")
	st := waitUnit(t, s, "ready on v2", func(st supervisor.UnitStatus) bool { return st.Ready && st.ID != first.ID })
	if c := st.Container; c == nil || c.Update == nil || c.Update.Phase != string(PhaseCommitted) || c.Image != r.apps.V2 {
		t.Errorf("status container facet = %+v, want committed on v2", c)
	}

	err = s.Replace(ctx, "app", d.UpdateFunc(r.apps.V3, env, r.prober()))
	var rb *RolledBackError
	if !errors.As(err, &rb) {
		t.Fatalf("Replace v2→v3 = %v, want *RolledBackError", err)
	}
	r.waitBody("/version", "v2")
	st = waitUnit(t, s, "ready on v2 again", func(st supervisor.UnitStatus) bool { return st.Ready })
	if c := st.Container; c == nil || c.Update == nil || c.Update.Phase != string(PhaseRolledBack) || st.Restarts != 0 {
		t.Errorf("status = %+v, want rolled_back and no restart counted", st)
	}
	if n := len(r.running()); n != 1 {
		t.Errorf("%d containers running, want 1", n)
	}
}
