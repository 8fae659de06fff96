package drills

import (
	"context"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/sim"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// TestReplicasLoseTheSweeper runs two real replicas on one PostgreSQL
// behind a round-robin proxy with simulated agents, kills the replica that
// runs the sweeper, and checks that the other takes the sweeper over
// within one window, nobody is marked offline, nobody registers again, and
// the new sweeper does detect hosts that really go silent.
func TestReplicasLoseTheSweeper(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*testenv.Long)
	defer cancel()
	dsn, err := pg.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokFile, admin := adminToken(t, t.TempDir())
	a, b := newCP(t, dsn, tokFile), newCP(t, dsn, tokFile)
	a.start()
	b.start()
	p := newProxy(a.addr, b.addr)
	lb := httptest.NewServer(p)
	defer lb.Close()

	const hosts = 200
	f, err := sim.Enroll(ctx, sim.FleetConfig{URL: lb.URL, AdminToken: admin, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Start(ctx)

	var leader, survivor *cp
	eventually(t, testenv.Short, "exactly one replica running the sweeper", func() bool {
		ha, errA := a.health()
		hb, errB := b.health()
		if errA != nil || errB != nil || ha.Sweeper == hb.Sweeper {
			return false
		}
		leader, survivor = a, b
		if hb.Sweeper {
			leader, survivor = b, a
		}
		return true
	})
	time.Sleep(2 * window) // steady state across both replicas (the scenario, not a sync)
	if p.served[0].Load() == 0 || p.served[1].Load() == 0 {
		t.Fatalf("proxy served %d and %d requests, want both replicas used", p.served[0].Load(), p.served[1].Load())
	}
	// At most one write transaction per flush window per replica.
	tx0, t0 := survivor.metric(t, "molecule_cp_store_write_transactions_total"), time.Now()
	time.Sleep(5 * interval) // measuring a span of five windows
	tx := survivor.metric(t, "molecule_cp_store_write_transactions_total") - tx0
	if windows := time.Since(t0).Seconds() / interval.Seconds(); tx > windows+1 {
		t.Errorf("replica wrote %.0f transactions in %.1f flush windows, want at most one per window", tx, windows)
	}

	killed := time.Now()
	leader.kill()
	eventually(t, window, "the surviving replica taking the sweeper", func() bool {
		h, err := survivor.health()
		return err == nil && h.Sweeper
	})
	t.Logf("sweeper handed over %s after the leader was killed (window %s)", time.Since(killed).Round(time.Millisecond), window)
	if n := survivor.metric(t, "molecule_cp_sweeper_leader"); n != 1 {
		t.Errorf("survivor molecule_cp_sweeper_leader = %v, want 1", n)
	}

	time.Sleep(3 * window) // long enough for any wrong offline to show
	if n, err := f.OfflineSince(ctx, killed.Add(-window), nil); err != nil || n != 0 {
		t.Errorf("%d hosts marked offline after the replica died (%v), want 0", n, err)
	}
	evs, err := f.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	registered := 0
	for _, e := range evs {
		if e.Type == api.EventRegistered {
			registered++
		}
	}
	if registered != hosts {
		t.Errorf("%d registrations, want %d: no host registers again", registered, hosts)
	}
	w := f.Window(killed.Add(2*interval), time.Now())
	if w.Errors != 0 || w.Heartbeats == 0 {
		t.Errorf("after the failover: %d heartbeats, %d errors; want heartbeats and no errors", w.Heartbeats, w.Errors)
	}

	// The new sweeper judges: hosts that really go silent are detected.
	silenced := f.Kill(5)
	d, err := f.Detect(ctx, silenced, 3*window)
	if err != nil || d.Detected != len(silenced) {
		t.Fatalf("new sweeper detected %d of %d silent hosts (%v)", d.Detected, len(silenced), err)
	}
	t.Logf("detection by the new sweeper: p50 %s p99 %s (window %s)", d.P50, d.P99, window)
	survivor.stop(syscall.SIGTERM)
}
