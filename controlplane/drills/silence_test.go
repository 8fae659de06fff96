package drills

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/sim"
)

// TestMassSilence: a few hosts going silent are marked offline; when most
// of the fleet goes silent at once the control plane assumes the fault is
// its own, marks nobody offline and says so on /healthz and /metrics.
func TestMassSilence(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.Long)
	defer cancel()
	dir := t.TempDir()
	tokFile, admin := adminToken(t, dir)
	c := newCP(t, "sqlite://"+filepath.Join(dir, "cp.db"), tokFile, "--mass-silence-share", "0.5", "--mass-silence-min", "10")
	c.start()
	f, err := sim.Enroll(ctx, sim.FleetConfig{URL: c.url(), AdminToken: admin, Hosts: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Start(ctx)
	time.Sleep(window + interval) // past the control plane's restart window, every host beating

	// A minority dies: detected as usual.
	few := f.Kill(5)
	d, err := f.Detect(ctx, few, 3*window)
	if err != nil || d.Detected != len(few) {
		t.Fatalf("detected %d of %d silent hosts (%v), want all", d.Detected, len(few), err)
	}

	// Most of the rest go silent at once.
	since := time.Now()
	many := f.Kill(60)
	eventually(t, 2*window, "mass silence on /healthz", func() bool {
		h, err := c.health()
		return err == nil && h.MassSilence
	})
	time.Sleep(2 * window) // long enough for every one of them to be overdue
	if n, err := f.OfflineSince(ctx, since, nil); err != nil || n != 0 {
		t.Errorf("%d hosts marked offline during a mass silence (%v), want 0", n, err)
	}
	if n, err := countEvents(ctx, c, admin, "removed", since); err != nil || n != 0 {
		t.Errorf("%d removed events during a mass silence (%v), want 0", n, err)
	}
	if v := c.metric(t, "molecule_cp_mass_silence"); v != 1 {
		t.Errorf("molecule_cp_mass_silence = %v, want 1", v)
	}
	if v := c.metric(t, "molecule_cp_silent_hosts"); v < float64(len(many)) {
		t.Errorf("molecule_cp_silent_hosts = %v, want at least %d", v, len(many))
	}
	ac, err := api.New(api.Options{BaseURL: c.url(), AdminToken: admin})
	if err != nil {
		t.Fatal(err)
	}
	online, err := ac.ListHosts(ctx, api.HostFilter{Status: api.StatusOnline})
	if err != nil {
		t.Fatal(err)
	}
	if want := 100 - len(few); len(online) != want {
		t.Errorf("%d hosts online, want %d: the silent majority stays online", len(online), want)
	}
	c.stop(syscall.SIGTERM)
}
