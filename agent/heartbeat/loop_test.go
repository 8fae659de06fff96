//go:build unix

package heartbeat

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/server"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const admin = "fleet-test-admin-token"

// cp is a real control plane on SQLite behind a loopback listener.
type cp struct {
	t     *testing.T
	url   string
	addr  string
	dsn   string
	http  *httptest.Server
	st    store.Store
	admin *api.Client
}

func startCP(t *testing.T, addr, dsn string) *cp {
	t.Helper()
	if dsn == "" {
		dsn = "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	}
	st, err := store.Open(context.Background(), dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(context.Background(), server.Config{Store: st, AdminToken: secretstore.New(admin),
		Interval: 100 * time.Millisecond, FlushWindow: 100 * time.Millisecond, HostRate: 100, HostBurst: 100})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hs.Listener = ln
	}
	hs.Start()
	c := &cp{t: t, url: hs.URL, addr: hs.Listener.Addr().String(), dsn: dsn, http: hs, st: st}
	c.admin, _ = api.New(api.Options{BaseURL: hs.URL, AdminToken: secretstore.New(admin)})
	t.Cleanup(c.stop)
	return c
}

func (c *cp) stop() {
	if c.http != nil {
		c.http.Close()
		_ = c.st.Close()
		c.http = nil
	}
}

func (c *cp) enrollment() secretstore.Secret {
	c.t.Helper()
	tok, err := c.admin.CreateEnrollmentToken(context.Background(), api.EnrollmentTokenRequest{Org: "acme", Role: "workspace"})
	if err != nil {
		c.t.Fatal(err)
	}
	return secretstore.New(tok.Token)
}

func (c *cp) registrations(hostID string) int {
	c.t.Helper()
	evs, err := c.admin.Events(context.Background(), hostID)
	if err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == api.EventRegistered {
			n++
		}
	}
	return n
}

type agent struct {
	loop    *Loop
	cancel  context.CancelFunc
	done    chan error
	gone    atomic.Int32
	mu      sync.Mutex
	replies int
}

func runAgent(t *testing.T, url, dir, boot string, enroll secretstore.Secret) *agent {
	t.Helper()
	c, err := api.New(api.Options{BaseURL: url, RetryMax: -1, RequestTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{done: make(chan error, 1)}
	a.loop, err = New(Config{
		Client: c, URL: url, StateDir: dir,
		Proof: func(context.Context) (api.Proof, error) {
			return api.Proof{EnrollmentToken: enroll, MachineID: "machine-1"}, nil
		},
		Register: api.RegisterRequest{AgentVersion: "1.2.3", BootID: boot, Role: "workspace"},
		Snapshot: func() api.HeartbeatRequest {
			return api.HeartbeatRequest{AgentVersion: "1.2.3", BootID: boot, Tunnel: &api.TunnelStatus{ID: "tun-1", ReadyConnections: 4},
				Units: []api.UnitStatus{{Name: "runtime", State: api.UnitReady}}}
		},
		OnReply:    func(api.HeartbeatResponse) { a.mu.Lock(); a.replies++; a.mu.Unlock() },
		OnGone:     func() { a.gone.Add(1) },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.done <- a.loop.Run(ctx) }()
	t.Cleanup(a.stop)
	return a
}

func (a *agent) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
		a.cancel = nil
	}
}

func (a *agent) beats() int { a.mu.Lock(); defer a.mu.Unlock(); return a.replies }

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Short)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling, not synchronising
	}
}

func TestRegisterHeartbeatAndPersist(t *testing.T) {
	c := startCP(t, "", "")
	dir := t.TempDir()
	enroll := c.enrollment()
	a := runAgent(t, c.url, dir, "boot-1", enroll)
	eventually(t, "two heartbeats", func() bool { return a.beats() >= 2 })
	id := a.loop.Status().HostID
	h, err := c.admin.GetHost(context.Background(), id)
	if err != nil || h.Status != api.StatusOnline || h.Report == nil || h.Report.Tunnel.ID != "tun-1" {
		t.Fatalf("host = %+v, %v; want online with the snapshot's tunnel", h, err)
	}
	fi, err := os.Stat(filepath.Join(dir, StateFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("state dir holds %d entries, want only %s (no temp files left)", len(entries), StateFile)
	}
	a.stop()

	// Restart on the same boot: the saved registration is used as is.
	a2 := runAgent(t, c.url, dir, "boot-1", enroll)
	eventually(t, "heartbeat after restart", func() bool { return a2.beats() >= 1 })
	if got := c.registrations(id); got != 1 {
		t.Errorf("registrations after a restart on the same boot = %d, want 1", got)
	}
	a2.stop()

	// Reboot: registers again presenting the saved token, same host.
	a3 := runAgent(t, c.url, dir, "boot-2", enroll)
	eventually(t, "heartbeat after reboot", func() bool { return a3.beats() >= 1 })
	if got := a3.loop.Status().HostID; got != id {
		t.Errorf("host after reboot = %s, want %s", got, id)
	}
	if got := c.registrations(id); got != 2 {
		t.Errorf("registrations after a reboot = %d, want 2", got)
	}
	var saved state
	b, _ := os.ReadFile(filepath.Join(dir, StateFile))
	_ = json.Unmarshal(b, &saved)
	if saved.BootID != "boot-2" || saved.HostID != id {
		t.Errorf("saved state = %+v, want boot-2 host %s", saved, id)
	}
}

func TestUnauthorizedRegistersAgain(t *testing.T) {
	c := startCP(t, "", "")
	enroll := c.enrollment()
	a := runAgent(t, c.url, t.TempDir(), "boot-1", enroll)
	eventually(t, "first heartbeat", func() bool { return a.beats() >= 1 })
	id := a.loop.Status().HostID
	// Someone registers the same machine and boot: our token is rotated out.
	other, _ := api.New(api.Options{BaseURL: c.url})
	if _, err := other.Register(context.Background(), api.Proof{EnrollmentToken: enroll, MachineID: "machine-1"}, secretstore.Secret{},
		api.RegisterRequest{BootID: "boot-1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a third registration after 401", func() bool { return c.registrations(id) >= 3 })
	n := a.beats()
	eventually(t, "heartbeats after re-registering", func() bool { return a.beats() > n+1 })
	if a.gone.Load() != 0 {
		t.Error("OnGone called on 401")
	}
}

func TestGoneStopsAndIdles(t *testing.T) {
	c := startCP(t, "", "")
	a := runAgent(t, c.url, t.TempDir(), "boot-1", c.enrollment())
	eventually(t, "first heartbeat", func() bool { return a.beats() >= 1 })
	dep, err := c.admin.Deprovision(context.Background(), a.loop.Status().HostID)
	if err != nil || dep.TunnelID != "tun-1" {
		t.Fatalf("deprovision = %+v, %v; want tunnel tun-1", dep, err)
	}
	eventually(t, "OnGone", func() bool { return a.gone.Load() == 1 })
	if st := a.loop.Status(); !st.Gone || st.Registered {
		t.Errorf("status after 410 = %+v, want gone", st)
	}
	a.stop()
	if got := a.gone.Load(); got != 1 {
		t.Errorf("OnGone called %d times, want 1", got)
	}
}

func TestControlPlaneDownThenUp(t *testing.T) {
	// Reserve an address, then leave nothing listening on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	url := "http://" + addr

	// The enrollment token must exist before the agent starts: make it on a
	// control plane that then goes away.
	c := startCP(t, addr, dsn)
	enroll := c.enrollment()
	c.stop()

	a := runAgent(t, url, t.TempDir(), "boot-1", enroll)
	eventually(t, "three failed attempts", func() bool { return a.loop.Status().Failures >= 3 })
	if st := a.loop.Status(); st.Registered || !strings.Contains(st.LastError, "connect") {
		t.Errorf("status while down = %+v", st)
	}
	c2 := startCP(t, addr, dsn)
	eventually(t, "recovery after the control plane returns", func() bool { return a.beats() >= 1 })
	id := a.loop.Status().HostID
	// Down again after registering: the loop keeps going and recovers.
	c2.stop()
	n := a.beats()
	eventually(t, "failures while down", func() bool { return a.loop.Status().Failures >= 2 })
	startCP(t, addr, dsn)
	eventually(t, "heartbeats after the second outage", func() bool { return a.beats() > n })
	if got := a.loop.Status().HostID; got != id || a.gone.Load() != 0 {
		t.Errorf("after outages host = %s gone = %d; want %s, 0", got, a.gone.Load(), id)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	c, _ := api.New(api.Options{BaseURL: "http://127.0.0.1:1"})
	ok := Config{Client: c, StateDir: "/x", Proof: func(context.Context) (api.Proof, error) { return api.Proof{}, nil },
		Snapshot: func() api.HeartbeatRequest { return api.HeartbeatRequest{} }, Register: api.RegisterRequest{BootID: "b"}}
	if _, err := New(ok); err != nil {
		t.Fatalf("New(valid) = %v", err)
	}
	bad := ok
	bad.StateDir = ""
	if _, err := New(bad); err == nil || !strings.Contains(err.Error(), "state_dir") {
		t.Errorf("New without state dir = %v, want state_dir error", err)
	}
}

func TestCorruptStateIsIgnored(t *testing.T) {
	c := startCP(t, "", "")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := runAgent(t, c.url, dir, "boot-1", c.enrollment())
	eventually(t, "heartbeat despite a corrupt state file", func() bool { return a.beats() >= 1 })
}
