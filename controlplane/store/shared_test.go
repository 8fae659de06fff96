package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

func TestSharedOnlyOnPostgres(t *testing.T) {
	st := openDSN(t, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"))
	if sh := store.SharedOf(st); sh != nil {
		t.Errorf("SharedOf(sqlite) = %T, want nil: SQLite serves one control plane", sh)
	}
}

// TestSharedLiveness: flushes from two replicas, the census, marking
// offline, coming back online, and the sweeper lock held by one at a time.
func TestSharedLiveness(t *testing.T) {
	c := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	dsn, err := c.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, b := openDSN(t, dsn), openDSN(t, dsn)
	sa, sb := store.SharedOf(a), store.SharedOf(b)
	for _, k := range []string{"x", "y", "z"} {
		if _, _, err := a.Register(ctx, reg(k, "b1", "tok-"+k, "")); err != nil {
			t.Fatal(err)
		}
	}
	hx, hy := "h-x-b1", "h-y-b1"
	// Replica A saw x late, replica B saw y late; z stays at t0.
	if _, err := sa.FlushShared(ctx, []store.LiveUpdate{{HostID: hx, LastSeen: t0.Add(40 * time.Second)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := sb.FlushShared(ctx, []store.LiveUpdate{{HostID: hy, LastSeen: t0.Add(40 * time.Second)}, {HostID: hx, LastSeen: t0.Add(10 * time.Second)}}, nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.GetHost(ctx, hx); !h.LastSeen.Equal(t0.Add(40 * time.Second)) {
		t.Errorf("x last_seen = %s, want the later of both replicas' %s", h.LastSeen, t0.Add(40*time.Second))
	}
	cut := t0.Add(30 * time.Second)
	got, err := sa.Census(ctx, cut, cut)
	if err != nil || got != (store.Census{Online: 3, Silent: 1, Overdue: 1}) {
		t.Fatalf("census = %+v, %v; want 3 online, 1 silent, 1 overdue", got, err)
	}
	tx0 := a.Stats().WriteTx
	off, err := sa.MarkOffline(ctx, cut, t0.Add(41*time.Second))
	if err != nil || len(off) != 1 || off[0].ID != "h-z-b1" {
		t.Fatalf("MarkOffline = %+v, %v; want z", off, err)
	}
	if n := a.Stats().WriteTx - tx0; n != 1 {
		t.Errorf("MarkOffline used %d transactions, want 1", n)
	}
	// A heartbeat older than the offline mark does not bring z back; a newer one does.
	if _, err := sb.FlushShared(ctx, []store.LiveUpdate{{HostID: "h-z-b1", LastSeen: t0.Add(35 * time.Second)}}, nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.GetHost(ctx, "h-z-b1"); h.Status != store.StatusOffline {
		t.Errorf("z after a heartbeat from before its offline mark = %s, want offline", h.Status)
	}
	if _, err := sb.FlushShared(ctx, []store.LiveUpdate{{HostID: "h-z-b1", LastSeen: t0.Add(42 * time.Second)}}, nil); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.GetHost(ctx, "h-z-b1"); h.Status != store.StatusOnline {
		t.Errorf("z after a newer heartbeat = %s, want online", h.Status)
	}
	evs, _ := a.Events(ctx, "h-z-b1", 10)
	if n := len(evs); n < 2 || evs[n-2].Type != "offline" || evs[n-1].Type != "online" {
		t.Errorf("z events = %+v, want ... offline, online", evs)
	}
	// Deprovisioned by A: B's flush reports it.
	if _, err := a.Deprovision(ctx, hy, "", t0.Add(43*time.Second)); err != nil {
		t.Fatal(err)
	}
	removed, err := sb.FlushShared(ctx, []store.LiveUpdate{{HostID: hy, LastSeen: t0.Add(44 * time.Second)}}, nil)
	if err != nil || len(removed) != 1 || removed[0] != hy {
		t.Errorf("flush after deprovision: removed = %v, %v; want [%s]", removed, err, hy)
	}
	// The sweeper lock: one holder; resigning hands it over.
	if ok, err := sa.Leader(ctx); !ok || err != nil {
		t.Fatalf("A takes the lock = %v, %v; want true", ok, err)
	}
	if ok, err := sb.Leader(ctx); ok || err != nil {
		t.Fatalf("B takes the lock held by A = %v, %v; want false", ok, err)
	}
	if ok, _ := sa.Leader(ctx); !ok {
		t.Fatal("A lost a lock it holds")
	}
	sa.Resign()
	if ok, err := sb.Leader(ctx); !ok || err != nil {
		t.Fatalf("B after A resigned = %v, %v; want true", ok, err)
	}
	sb.Resign()
}
