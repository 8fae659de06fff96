package server

import (
	"context"
	"database/sql"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func (f *fixture) enroll(machine string) api.Registration {
	f.t.Helper()
	r, err := f.agent.Register(context.Background(), api.Proof{EnrollmentToken: secret.New(f.enrollToken()), MachineID: machine},
		secret.Secret{}, api.RegisterRequest{AgentVersion: "1.0.0", BootID: "boot-" + machine})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func report(tunnel string) api.HeartbeatRequest {
	return api.HeartbeatRequest{AgentVersion: "1.0.0", BootID: "b", Tunnel: &api.TunnelStatus{ID: tunnel, ReadyConnections: 4},
		Units: []api.UnitStatus{{Name: "cloudflared", State: api.UnitReady, Restarts: 1}}}
}

func (f *fixture) hostStatus(id string) string {
	f.t.Helper()
	h, err := f.admin.GetHost(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return h.Status
}

func TestLivenessFlushAndRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, b := f.enrollTenant("m-a"), f.enrollTenant("m-b") // each reports its org's tunnel
	for _, r := range []api.Registration{a, b} {
		if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("tun-"+r.HostID)); err != nil {
			t.Fatal(err)
		}
	}
	// One flush writes every host in one transaction.
	tx0 := f.store.Stats().WriteTx
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	if got := f.store.Stats().WriteTx - tx0; got != 1 {
		t.Errorf("flush of 2 hosts used %d transactions, want 1", got)
	}
	stored, _ := f.store.GetHost(ctx, a.HostID)
	if stored.TunnelID != "tun-"+a.HostID {
		t.Errorf("stored tunnel = %q, want tun-%s", stored.TunnelID, a.HostID)
	}
	// An unchanged report does not rewrite the row; only last_seen moves.
	f.clock.Add(time.Second)
	if _, err := f.agent.Heartbeat(ctx, a.HostID, a.HostToken, report("tun-"+a.HostID)); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	again, _ := f.store.GetHost(ctx, a.HostID)
	if !again.UpdatedAt.Equal(stored.UpdatedAt) || !again.LastSeen.After(stored.LastSeen) {
		t.Errorf("unchanged heartbeat: updated_at %s->%s (want same), last_seen %s->%s (want later)",
			stored.UpdatedAt, again.UpdatedAt, stored.LastSeen, again.LastSeen)
	}
	// Nothing changed: no transaction at all.
	tx1 := f.store.Stats().WriteTx
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil || f.store.Stats().WriteTx != tx1 {
		t.Errorf("idle flush: err %v, transactions %d, want 0", err, f.store.Stats().WriteTx-tx1)
	}

	// b goes silent: online until 3 intervals + grace have passed, then offline.
	after := f.srv.offlineAfter()
	f.clock.Add(after - time.Second) // b's last beat was 1s earlier than a's
	f.srv.lv.sweep(context.Background(), f.clock.Now())
	if got := f.hostStatus(b.HostID); got != api.StatusOnline {
		t.Fatalf("b at exactly the deadline = %s, want online", got)
	}
	f.clock.Add(time.Millisecond)
	f.srv.lv.sweep(context.Background(), f.clock.Now())
	if got := f.hostStatus(b.HostID); got != api.StatusOffline {
		t.Fatalf("b after the deadline = %s, want offline", got)
	}
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	evs, _ := f.admin.Events(ctx, b.HostID)
	if len(evs) == 0 || evs[len(evs)-1].Type != api.EventOffline {
		t.Fatalf("events of b = %+v, want last offline", evs)
	}
	if h, _ := f.store.GetHost(ctx, b.HostID); h.Status != store.StatusOffline {
		t.Errorf("stored status of b = %s, want offline", h.Status)
	}
	// b comes back.
	if _, err := f.agent.Heartbeat(ctx, b.HostID, b.HostToken, report("x")); err != nil {
		t.Fatal(err)
	}
	if got := f.hostStatus(b.HostID); got != api.StatusOnline {
		t.Errorf("b after a heartbeat = %s, want online", got)
	}

	// Restart the control plane long after the last beat: nobody goes
	// offline during the first window.
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	f.stop()
	f.clock.Add(time.Hour)
	f.start()
	f.srv.lv.sweep(context.Background(), f.clock.Now().Add(after))
	for _, r := range []api.Registration{a, b} {
		if got := f.hostStatus(r.HostID); got != api.StatusOnline {
			t.Errorf("host %s one window after restart = %s, want online", r.HostID, got)
		}
	}
	f.srv.lv.sweep(context.Background(), f.clock.Now().Add(after+time.Millisecond))
	if got := f.hostStatus(a.HostID); got != api.StatusOffline {
		t.Errorf("host a past the first window after restart = %s, want offline", got)
	}
	// Tokens survive the restart (hashes are loaded from the store).
	if _, err := f.agent.Heartbeat(ctx, a.HostID, a.HostToken, report("x")); err != nil {
		t.Errorf("heartbeat after restart: %v", err)
	}
}

func TestHeartbeatErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r := f.enrollTenant("m-1")
	tok := r.HostToken.Reveal()
	hb := "/v1/hosts/" + r.HostID + "/heartbeat"
	tests := []struct {
		name      string
		path      string
		token     string
		body      string
		wantCode  int
		wantField string
	}{
		{"unknown host", "/v1/hosts/nope/heartbeat", tok, `{}`, 401, ""},
		{"no token", hb, "", `{}`, 401, ""},
		{"wrong token", hb, "mhk_wrong", `{}`, 401, ""},
		{"unknown field", hb, tok, `{"units":[{"name":"a","colour":"red"}]}`, 400, "colour"},
		{"malformed", hb, tok, `{"units":[`, 400, ""},
		{"ok", hb, tok, `{"agent_version":"1"}`, 200, ""},
		{"rate limited", hb, tok, `{}`, 429, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, e := f.post(tt.path, tt.token, []byte(tt.body))
			if resp.StatusCode != tt.wantCode || e.Field != tt.wantField {
				t.Errorf("got %d field %q (%s), want %d field %q", resp.StatusCode, e.Field, e.Error, tt.wantCode, tt.wantField)
			}
			if tt.wantCode == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		})
	}
	// Burst is 3 and the clock is frozen: the 3 accepted-token requests above
	// used it up; a second later one token is back.
	f.clock.Add(time.Second)
	if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("tun-9")); err != nil {
		t.Fatalf("heartbeat after refill: %v", err)
	}
	dep, err := f.admin.Deprovision(ctx, r.HostID)
	if err != nil || dep.TunnelID != "tun-9" {
		t.Fatalf("deprovision = %+v, %v; want tunnel tun-9", dep, err)
	}
	f.clock.Add(time.Hour)
	if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("tun-9")); !isCode(err, http.StatusGone) {
		t.Errorf("heartbeat after deprovision err = %v, want 410", err)
	}
	if _, err := f.agent.Heartbeat(ctx, r.HostID, secret.New("mhk_bad"), report("tun-9")); !isCode(err, http.StatusUnauthorized) {
		t.Errorf("heartbeat after deprovision with a bad token err = %v, want 401", err)
	}
	if dep2, err := f.admin.Deprovision(ctx, r.HostID); err != nil || dep2.TunnelID != "tun-9" {
		t.Errorf("second deprovision = %+v, %v; want the same tunnel", dep2, err)
	}
	if _, err := f.agent.Register(ctx, api.Proof{EnrollmentToken: secret.New(f.enrollToken()), MachineID: "m-1"}, r.HostToken,
		api.RegisterRequest{BootID: "boot-m-1"}); !isCode(err, http.StatusGone) {
		t.Errorf("register of a deprovisioned machine err = %v, want 410", err)
	}
}

func TestAdminAPI(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, tok := range []string{"", "wrong", adminToken + "x"} {
		c, _ := api.New(api.Options{BaseURL: f.http.URL, AdminToken: secret.New(tok), RetryMax: -1})
		if _, err := c.ListHosts(ctx, api.HostFilter{}); !isCode(err, 401) {
			t.Errorf("list hosts with admin token %q err = %v, want 401", tok, err)
		}
	}
	f.enroll("m-1")
	f.declare("i-1")
	if _, err := f.registerIMDS("i-1", "b", secret.Secret{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		f    api.HostFilter
		want int
	}{
		{api.HostFilter{}, 2},
		{api.HostFilter{Role: "workspace"}, 1},
		{api.HostFilter{Org: "acme", Role: "tenant", Channel: "stable"}, 1},
		{api.HostFilter{Status: "online"}, 2},
		{api.HostFilter{Status: "offline"}, 0},
	}
	for _, tt := range tests {
		hs, err := f.admin.ListHosts(ctx, tt.f)
		if err != nil || len(hs) != tt.want {
			t.Errorf("ListHosts(%+v) = %d, %v; want %d", tt.f, len(hs), err, tt.want)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, f.http.URL+"/v1/admin/hosts?colour=red", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("unknown filter status = %d, want 400", resp.StatusCode)
	}
	if err := f.admin.DeclareInstance(ctx, api.Declaration{InstanceID: "i-2", Org: "acme", Role: "boss"}); !isCode(err, 400) {
		t.Errorf("declare with a bad role err = %v, want 400", err)
	}
	if _, err := f.admin.GetHost(ctx, "nope"); !isCode(err, 404) {
		t.Errorf("get unknown host err = %v, want 404", err)
	}
	if err := f.admin.SetChannelImages(ctx, "stable", map[string]string{"platform": "ghcr.io/x:latest"}); err == nil || !strings.Contains(err.Error(), "not pinned by digest") {
		t.Errorf("a tag as a channel image: err = %v, want refused", err)
	}
	if err := f.admin.SetChannelImages(ctx, "stable", map[string]string{"platform": "ghcr.io/x@sha256:abababababababababababababababababababababababababababababababab"}); err != nil {
		t.Fatal(err)
	}
	hs, _ := f.admin.ListHosts(ctx, api.HostFilter{Role: "tenant"})
	r, err := f.registerIMDS("i-1", "b", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := f.agent.Heartbeat(ctx, hs[0].ID, r.HostToken, report("t"))
	if err != nil || resp2.Desired.Revision != 1 || resp2.Desired.Images["platform"] != "ghcr.io/x@sha256:abababababababababababababababababababababababababababababababab" || resp2.Interval() != time.Second {
		t.Errorf("heartbeat reply = %+v, %v; want revision 1 with the platform image and 1s interval", resp2, err)
	}
}

// TestNoTokenStoredOrLogged scans the database file and the log for every
// token the server handed out.
func TestNoTokenStoredOrLogged(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	enroll := f.enrollToken()
	r, err := f.agent.Register(ctx, api.Proof{EnrollmentToken: secret.New(enroll), MachineID: "m"}, secret.Secret{}, api.RegisterRequest{BootID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("t")); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.flush(ctx, f.srv.store.Flush); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimPrefix(f.dsn, "sqlite://")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	if _, err := db.Exec("PRAGMA wal_checkpoint(FULL)"); err != nil {
		t.Fatal(err)
	}
	var files []byte
	for _, p := range []string{path, path + "-wal"} {
		b, _ := os.ReadFile(p)
		files = append(files, b...)
	}
	hosts, _ := f.admin.ListHosts(ctx, api.HostFilter{})
	for name, secret := range map[string]string{"enrollment token": enroll, "host token": r.HostToken.Reveal(), "admin token": adminToken} {
		if strings.Contains(string(files), secret) {
			t.Errorf("%s found in the database files under %s", name, filepath.Dir(path))
		}
		if strings.Contains(f.logBuf.String(), secret) {
			t.Errorf("%s found in the log", name)
		}
		if strings.Contains(string(mustJSON(hosts)), secret) {
			t.Errorf("%s found in the admin host list", name)
		}
	}
}

func TestMetricsAndHealthz(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.agent.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	r := f.enroll("m")
	if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("t")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(f.http.URL + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b := new(strings.Builder)
	_, _ = io.Copy(b, resp.Body)
	for _, want := range []string{"molecule_cp_heartbeats_total 1", "molecule_cp_store_write_transactions_total", `molecule_cp_hosts{status="online"} 1`, `molecule_cp_requests_total{code="200",route="heartbeat"} 1`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestRunFlushesOnShutdown(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := f.enrollTenant("m")
	if _, err := f.agent.Heartbeat(context.Background(), r.HostID, r.HostToken, report("tun-final")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.srv.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if h, _ := f.store.GetHost(context.Background(), r.HostID); h.TunnelID != "tun-final" {
		t.Errorf("stored tunnel after shutdown = %q, want tun-final", h.TunnelID)
	}
}
