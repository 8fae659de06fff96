package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/attest/attesttest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const adminToken = "admin-s3cret-token-value"

// clock is the server's clock in tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t      testing.TB
	ca     *attesttest.CA
	dsn    string
	store  store.Store
	srv    *Server
	http   *httptest.Server
	admin  *api.Client
	agent  *api.Client
	clock  *clock
	logBuf *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, ca: attesttest.NewCA(t, "us-east-1"), dsn: "sqlite://" + filepath.Join(t.TempDir(), "cp.db"),
		clock: &clock{t: time.Now()}, logBuf: &syncBuffer{}}
	f.start()
	return f
}

// start opens the store and starts a server on it (again, for restarts).
func (f *fixture) start() {
	t := f.t
	st, err := store.Open(context.Background(), f.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := attest.NewVerifier([]*x509.Certificate{f.ca.Cert}, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(context.Background(), Config{
		Store: st, Verifier: v, AdminToken: secret.New(adminToken), Interval: time.Second, Grace: 500 * time.Millisecond,
		FlushWindow: time.Second, HostRate: 1, HostBurst: 3, Now: f.clock.Now,
		Logger: slog.New(slog.NewTextHandler(f.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	f.store, f.srv = st, srv
	f.http = httptest.NewServer(srv.Handler())
	f.admin, _ = api.New(api.Options{BaseURL: f.http.URL, AdminToken: secret.New(adminToken), RetryMax: -1})
	f.agent, _ = api.New(api.Options{BaseURL: f.http.URL, RetryMax: -1})
	t.Cleanup(f.stop)
}

func (f *fixture) stop() {
	if f.http == nil {
		return
	}
	f.http.Close()
	_ = f.store.Close()
	f.http = nil
}

func (f *fixture) declare(instance string) {
	f.t.Helper()
	if err := f.admin.DeclareInstance(context.Background(), api.Declaration{InstanceID: instance, Org: "acme", Role: "tenant", Channel: "stable"}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) enrollToken() string {
	f.t.Helper()
	tok, err := f.admin.CreateEnrollmentToken(context.Background(), api.EnrollmentTokenRequest{Org: "acme", Role: "workspace", Workspace: "ws-1"})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok.Token
}

func (f *fixture) registerIMDS(instance, boot string, current secret.Secret) (api.Registration, error) {
	return f.agent.Register(context.Background(),
		api.Proof{IdentityPKCS7: f.ca.Sign(f.t, attesttest.Doc(instance, f.clock.Now().Add(-time.Minute)))},
		current, api.RegisterRequest{Role: "tenant", Org: "acme", AgentVersion: "1.0.0", BootID: boot})
}

func (f *fixture) post(path, token string, body []byte) (*http.Response, api.Error) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.http.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var e api.Error
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp, e
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func (f *fixture) countHostsAndEvents() (int, int) {
	f.t.Helper()
	hs, err := f.store.ListHosts(context.Background(), store.HostFilter{})
	if err != nil {
		f.t.Fatal(err)
	}
	evs, err := f.store.Events(context.Background(), "", 0)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(hs), len(evs)
}

func TestRegisterAttestation(t *testing.T) {
	now := time.Now()
	f := newFixture(t)
	f.declare("i-valid")
	f.declare("i-replayed")
	first, err := f.registerIMDS("i-replayed", "boot-1", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	enroll := f.enrollToken()
	other := attesttest.NewCA(t, "attacker")
	imds := func(p7, instance, boot string) []byte {
		return mustJSON(api.RegisterRequest{IdentityPKCS7: p7, Role: "tenant", Org: "acme", AgentVersion: "1", BootID: boot})
	}
	doc := func(instance string, age time.Duration) []byte { return attesttest.Doc(instance, now.Add(-age)) }
	tests := []struct {
		name      string
		body      []byte
		wantCode  int
		wantField string
		stores    bool
	}{
		{"valid document", imds(f.ca.Sign(t, doc("i-valid", time.Minute)), "i-valid", "b1"), 201, "", true},
		{"bad signature", imds(other.Sign(t, doc("i-valid", time.Minute)), "i-valid", "b1"), 401, "identity_pkcs7", false},
		{"stale pendingTime", imds(f.ca.Sign(t, doc("i-valid", time.Hour)), "i-valid", "b1"), 401, "identity_pkcs7", false},
		{"undeclared instance", imds(f.ca.Sign(t, doc("i-unknown", time.Minute)), "i-unknown", "b1"), 403, "", false},
		{"replay from a second boot", imds(f.ca.Sign(t, doc("i-replayed", time.Minute)), "i-replayed", "boot-2"), 409, "host_token", false},
		{"wrong enrollment token", mustJSON(api.RegisterRequest{EnrollmentToken: "mek_wrong", MachineID: "m1", BootID: "b1"}), 401, "enrollment_token", false},
		{"oversized body", append([]byte(`{"boot_id":"`), bytes.Repeat([]byte("a"), api.MaxBodyBytes)...), 413, "", false},
		{"unknown field", []byte(`{"boot_id":"b1","enrollment_token":"` + enroll + `","machine_id":"m1","surprise":1}`), 400, "surprise", false},
		{"malformed JSON", []byte(`{"boot_id":`), 400, "", false},
		{"trailing data", []byte(`{"boot_id":"b"} {}`), 400, "", false},
		{"wrong type", []byte(`{"boot_id":5}`), 400, "boot_id", false},
		{"two proofs", mustJSON(api.RegisterRequest{IdentityPKCS7: "x", EnrollmentToken: enroll, MachineID: "m", BootID: "b"}), 400, "identity_pkcs7", false},
		{"no proof", mustJSON(api.RegisterRequest{BootID: "b"}), 400, "identity_pkcs7", false},
		{"claim differs from declaration", mustJSON(api.RegisterRequest{IdentityPKCS7: f.ca.Sign(t, doc("i-valid", time.Minute)), Org: "globex", BootID: "b1"}), 403, "org", false},
		{"enrollment without machine_id", mustJSON(api.RegisterRequest{EnrollmentToken: enroll, BootID: "b1"}), 400, "machine_id", false},
		{"enrollment", mustJSON(api.RegisterRequest{EnrollmentToken: enroll, MachineID: "m-1", BootID: "b1", Role: "workspace"}), 201, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hosts0, events0 := f.countHostsAndEvents()
			tx0 := f.store.Stats().WriteTx
			resp, e := f.post(api.PathRegister, "", tt.body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status = %d (%s), want %d", resp.StatusCode, e.Error, tt.wantCode)
			}
			if e.Field != tt.wantField {
				t.Errorf("error field = %q, want %q", e.Field, tt.wantField)
			}
			hosts1, events1 := f.countHostsAndEvents()
			tx1 := f.store.Stats().WriteTx
			// A refusal of a known instance writes its audit event, nothing else.
			audit := 0
			if tt.wantCode == http.StatusConflict {
				audit = 1
				if evs, _ := f.store.Events(context.Background(), "", 1); len(evs) != 1 || evs[0].Type != store.EventRegisterRefused {
					t.Errorf("last event = %+v, want a %s audit event", evs, store.EventRegisterRefused)
				}
			}
			if !tt.stores && (hosts1 != hosts0 || events1 != events0+audit || tx1 != tx0+uint64(audit)) {
				t.Errorf("refused request stored something: hosts %d->%d events %d->%d transactions %d->%d", hosts0, hosts1, events0, events1, tx0, tx1)
			}
			if tt.stores && hosts1 != hosts0+1 {
				t.Errorf("hosts %d->%d, want one more", hosts0, hosts1)
			}
		})
	}
	// The refused replay did not disturb the registered host.
	if _, err := f.agent.Heartbeat(context.Background(), first.HostID, first.HostToken, api.HeartbeatRequest{BootID: "boot-1"}); err != nil {
		t.Errorf("heartbeat of the first boot after a refused replay: %v", err)
	}
}

func TestRegisterAgain(t *testing.T) {
	f := newFixture(t)
	f.declare("i-1")
	ctx := context.Background()
	r1, err := f.registerIMDS("i-1", "boot-1", secret.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	// Retrying the same boot (lost reply) gives the same host a new token.
	r2, err := f.registerIMDS("i-1", "boot-1", secret.Secret{})
	if err != nil || r2.HostID != r1.HostID || r2.HostToken.Equal(r1.HostToken) {
		t.Fatalf("same-boot register = %v, %v; want same host, new token", r2.HostID, err)
	}
	if _, err := f.agent.Heartbeat(ctx, r1.HostID, r1.HostToken, api.HeartbeatRequest{}); !isCode(err, 401) {
		t.Errorf("heartbeat with the rotated-out token err = %v, want 401", err)
	}
	// A reboot presenting the current token is accepted, even with an old
	// document; without the token the old document is refused.
	oldDoc := f.ca.Sign(t, attesttest.Doc("i-1", f.clock.Now()))
	f.clock.Add(time.Hour)
	reboot := func(tok secret.Secret) (api.Registration, error) {
		return f.agent.Register(ctx, api.Proof{IdentityPKCS7: oldDoc}, tok, api.RegisterRequest{AgentVersion: "1.0.1", BootID: "boot-2"})
	}
	if _, err := reboot(secret.Secret{}); !isCode(err, 401) {
		t.Fatalf("reboot with a stale document and no token err = %v, want 401", err)
	}
	if _, err := reboot(r1.HostToken); !isCode(err, 401) {
		t.Fatalf("reboot with a stale document and an old token err = %v, want 401", err)
	}
	r3, err := reboot(r2.HostToken)
	if err != nil || r3.HostID != r1.HostID {
		t.Fatalf("second boot with current token = %v, %v", r3.HostID, err)
	}
	if _, err := f.agent.Heartbeat(ctx, r3.HostID, r3.HostToken, api.HeartbeatRequest{BootID: "boot-2"}); err != nil {
		t.Errorf("heartbeat after re-register: %v", err)
	}
}

func isCode(err error, code int) bool {
	var se *api.StatusError
	return errors.As(err, &se) && se.Code == code
}

func secretOf(s string) secret.Secret { return secret.New(s) }

func TestConcurrentRegistrationsLeaveOneToken(t *testing.T) {
	f := newFixture(t)
	f.declare("i-race")
	const n = 16
	regs := make([]api.Registration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { regs[i], errs[i] = f.registerIMDS("i-race", "boot-1", secret.Secret{}) })
	}
	wg.Wait()
	valid := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("register #%d: %v", i, errs[i])
		}
		if regs[i].HostID != regs[0].HostID {
			t.Fatalf("register #%d got host %s, want %s", i, regs[i].HostID, regs[0].HostID)
		}
		if _, err := f.agent.Heartbeat(context.Background(), regs[i].HostID, regs[i].HostToken, api.HeartbeatRequest{}); err == nil {
			valid++
		} else if !isCode(err, 401) {
			t.Errorf("heartbeat #%d: %v, want 200 or 401", i, err)
		}
	}
	if valid != 1 {
		t.Errorf("%d of %d issued tokens work, want exactly 1", valid, n)
	}
}
