package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

type replica struct {
	srv   *Server
	http  *httptest.Server
	agent *api.Client
	admin *api.Client
}

func newReplica(t *testing.T, dsn string, clk *clock) *replica {
	t.Helper()
	st, err := store.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(context.Background(), Config{Store: st, AdminToken: secret.New(adminToken), Interval: time.Second,
		Grace: 500 * time.Millisecond, FlushWindow: time.Second, HostRate: 100, HostBurst: 100, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.lv.(*replicas); !ok {
		t.Fatal("server on PostgreSQL without shared liveness")
	}
	r := &replica{srv: srv, http: httptest.NewServer(srv.Handler())}
	r.agent, _ = api.New(api.Options{BaseURL: r.http.URL, RetryMax: -1})
	r.admin, _ = api.New(api.Options{BaseURL: r.http.URL, AdminToken: secret.New(adminToken), RetryMax: -1})
	t.Cleanup(func() { r.http.Close(); srv.lv.close(); _ = st.Close() })
	return r
}

// TestSharedReplicas: a host registered at one replica heartbeats at
// another, registers again at the first, is judged offline by the sweeper
// and comes back through the other replica's flush, and is deprovisioned at
// one and told so by the other.
func TestSharedReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	dsn, err := pg.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	a, b := newReplica(t, dsn, clk), newReplica(t, dsn, clk)
	a.srv.started = clk.Now().Add(-time.Hour) // long past its restart hold
	tok, err := a.admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "acme", Role: "workspace"})
	if err != nil {
		t.Fatal(err)
	}
	register := func() api.Registration {
		r, err := a.agent.Register(ctx, api.Proof{EnrollmentToken: secret.New(tok.Token), MachineID: "m1"}, secret.Secret{},
			api.RegisterRequest{BootID: "boot-1"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	reg := register()
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, reg.HostToken, report("tun-1")); err != nil {
		t.Fatalf("heartbeat at the other replica: %v, want accepted", err)
	}
	again := register()  // a new token, stored by replica A
	clk.Add(reloadEvery) // B reads a host again at most this often
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, again.HostToken, report("tun-1")); err != nil {
		t.Fatalf("heartbeat with the token rotated at the other replica: %v, want accepted", err)
	}
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, reg.HostToken, report("tun-1")); !errors.Is(err, api.ErrUnauthorized) && !errors.Is(err, api.ErrRateLimited) {
		t.Errorf("heartbeat with the old token: %v, want 401", err)
	}

	// B flushes; A holds the sweeper lock and judges from the database.
	if err := b.srv.lv.window(ctx, clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Second)
	a.srv.lv.sweep(ctx, clk.Now())
	if !a.srv.Leader() {
		t.Fatal("replica A did not take the sweeper lock")
	}
	if h, _ := a.admin.GetHost(ctx, reg.HostID); h.Status != api.StatusOnline {
		t.Errorf("host 2 s after its heartbeat = %s, want online", h.Status)
	}
	clk.Add(3 * time.Second)
	a.srv.lv.sweep(ctx, clk.Now())
	if h, _ := b.admin.GetHost(ctx, reg.HostID); h.Status != api.StatusOffline {
		t.Errorf("host silent 5 s, seen from replica B = %s, want offline", h.Status)
	}
	if n := b.srv.countStatus(store.StatusOffline); n != 1 {
		t.Errorf("replica B counts %d offline hosts for /metrics, want the stored 1", n)
	}
	// It beats at B again: B's flush brings it back online with an event.
	clk.Add(time.Second)
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, again.HostToken, report("tun-1")); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.lv.window(ctx, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if h, _ := a.admin.GetHost(ctx, reg.HostID); h.Status != api.StatusOnline {
		t.Errorf("host after a heartbeat at B = %s, want online", h.Status)
	}
	evs, _ := a.admin.Events(ctx, reg.HostID)
	if n := len(evs); n < 2 || evs[n-2].Type != api.EventOffline || evs[n-1].Type != api.EventOnline {
		t.Errorf("events = %+v, want ... offline, online", evs)
	}

	// Deprovisioned at A: B learns it at the flush after the host's next
	// heartbeat there, and answers 410 from then on.
	if _, err := a.admin.Deprovision(ctx, reg.HostID); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, again.HostToken, report("tun-1")); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.lv.window(ctx, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.agent.Heartbeat(ctx, reg.HostID, again.HostToken, report("tun-1")); !errors.Is(err, api.ErrGone) {
		t.Errorf("heartbeat at B after deprovision at A: %v, want 410", err)
	}
}
