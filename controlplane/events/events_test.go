package events

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)

func TestWatcher(t *testing.T) {
	w := NewWatcher(time.Minute)
	rep := func(unitState, phase string, tunnelReady int) *api.HeartbeatRequest {
		r := &api.HeartbeatRequest{Units: []api.UnitStatus{{Name: "platform", State: unitState, Detail: "exit 1"}},
			Tunnel: &api.TunnelStatus{ID: "tun-1", ReadyConnections: tunnelReady}}
		if phase != "" {
			r.Updates = []api.UpdateStatus{{Unit: "platform", Digest: "sha256:ab", Phase: phase}}
		}
		return r
	}
	steps := []struct {
		name  string
		rep   *api.HeartbeatRequest
		after time.Duration
		want  []string
	}{
		{"baseline emits nothing", rep(api.UnitFailed, "rolled_back", 0), 0, nil},
		{"same state emits nothing", rep(api.UnitFailed, "rolled_back", 0), time.Second, nil},
		{"recovers", rep(api.UnitReady, "verifying", 1), 2 * time.Second, nil},
		{"fails", rep(api.UnitFailed, "committed", 1), 3 * time.Second, []string{KindUnitFailed, KindUpdateCommitted}},
		{"rolls back", rep(api.UnitReady, "rolled_back", 0), 4 * time.Second, []string{KindUpdateRolledBack}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var got []string
			for _, e := range w.Observe("h1", t0.Add(s.after), s.rep) {
				got = append(got, e.Type)
				if e.HostID != "h1" {
					t.Errorf("event host = %q, want h1", e.HostID)
				}
			}
			if strings.Join(got, ",") != strings.Join(s.want, ",") {
				t.Errorf("events = %v, want %v", got, s.want)
			}
		})
	}
	// The tunnel is down since 4s (ready again at 2s and 3s).
	if evs := w.Sweep(t0.Add(time.Minute)); len(evs) != 0 {
		t.Errorf("sweep inside the window = %v, want none", evs)
	}
	evs := w.Sweep(t0.Add(time.Minute + 5*time.Second))
	if len(evs) != 1 || evs[0].Type != KindTunnelNotReady {
		t.Fatalf("sweep past the window = %v, want one tunnel_not_ready", evs)
	}
	if evs := w.Sweep(t0.Add(2 * time.Minute)); len(evs) != 0 {
		t.Errorf("second sweep of the same outage = %v, want none", evs)
	}
}

func TestSignVerify(t *testing.T) {
	sec := secret.New("0123456789abcdef-secret")
	body := []byte(`{"id":1}`)
	h := Sign(sec, t0, body)
	for _, tc := range []struct {
		name   string
		sec    secret.Secret
		header string
		body   []byte
		now    time.Time
		ok     bool
	}{
		{"valid", sec, h, body, t0.Add(time.Minute), true},
		{"other secret", secret.New("another-secret-of-16"), h, body, t0, false},
		{"tampered body", sec, h, []byte(`{"id":2}`), t0, false},
		{"too old", sec, h, body, t0.Add(time.Hour), false},
		{"garbage", sec, "v1=zz", body, t0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.sec, tc.header, tc.body, tc.now, 5*time.Minute)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	f.Add("t=1,v1=00", []byte("x"))
	f.Add(",,=,t=,v1", []byte{})
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		_ = Verify(secret.New("0123456789abcdef"), header, body, t0, time.Minute)
	})
}

func FuzzParseHooks(f *testing.F) {
	f.Add([]byte(`{"hooks":[{"name":"a","url":"http://x","kinds":["removed"],"secret_file":"s"}]}`))
	f.Add([]byte(`{"hooks":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseHooks(b, func(string) ([]byte, error) { return []byte("0123456789abcdef"), nil })
	})
}

func TestParseHooks(t *testing.T) {
	read := func(string) ([]byte, error) { return []byte("0123456789abcdef\n"), nil }
	for _, tc := range []struct {
		name, json, errHas string
	}{
		{"ok", `{"hooks":[{"name":"prov","url":"https://p.example/h","kinds":["removed"],"secret_file":"/s"}]}`, ""},
		{"deprovisioned alias", `{"hooks":[{"name":"prov","url":"https://p.example/h","kinds":["deprovisioned"],"secret_file":"/s"}]}`, ""},
		{"unknown kind", `{"hooks":[{"name":"prov","url":"https://p.example/h","kinds":["nope"],"secret_file":"/s"}]}`, "hooks[0].kinds[0]"},
		{"no secret", `{"hooks":[{"name":"prov","url":"https://p.example/h"}]}`, "hooks[0].secret_file"},
		{"bad url", `{"hooks":[{"name":"prov","url":"ftp://x","secret_file":"/s"}]}`, "hooks[0].url"},
		{"duplicate", `{"hooks":[{"name":"a","url":"http://x","secret_file":"/s"},{"name":"a","url":"http://x","secret_file":"/s"}]}`, "hooks[1].name"},
		{"unknown field", `{"hooks":[{"name":"a","url":"http://x","secret_file":"/s","secret":"x"}]}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs, err := ParseHooks([]byte(tc.json), read)
			if tc.errHas == "" {
				if err != nil || len(hs) != 1 || hs[0].Secret.Reveal() != "0123456789abcdef" {
					t.Fatalf("ParseHooks = %+v, %v", hs, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("err = %v, want it to name %q", err, tc.errHas)
			}
		})
	}
}

// receiver is a webhook endpoint that fails the first n requests with 500.
type receiver struct {
	mu      sync.Mutex
	fail    int
	sec     secret.Secret
	got     []string // bodies accepted
	badSigs int
	calls   int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if err := Verify(r.sec, req.Header.Get(SignatureHeader), b, time.Now(), time.Minute); err != nil {
		r.badSigs++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.fail > 0 {
		r.fail--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	r.got = append(r.got, string(b))
}

func TestDispatcher(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	sec := secret.New("webhook-secret-0123456789")
	rcv := &receiver{fail: 2, sec: sec}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	if err := st.Flush(ctx, nil, []store.Event{
		{HostID: "h1", Type: KindOnline, At: t0},
		{HostID: "h1", Type: KindDeprovisioned, Detail: "tunnel tun-42", At: t0},
	}); err != nil {
		t.Fatal(err)
	}
	d := &Dispatcher{Feed: st, Hooks: []Hook{{Name: "prov", URL: srv.URL, Kinds: []string{KindDeprovisioned}, Secret: sec}},
		Poll: 10 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(rctx); close(done) }()
	defer func() { stop(); <-done }()
	for {
		rcv.mu.Lock()
		n := len(rcv.got)
		rcv.mu.Unlock()
		if n > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no delivery accepted before the deadline")
		}
		time.Sleep(10 * time.Millisecond) // polling for the receiver, not synchronising
	}
	stop()
	<-done
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.got) != 1 || !strings.Contains(rcv.got[0], `"tunnel_id":"tun-42"`) || !strings.Contains(rcv.got[0], `"kind":"removed"`) {
		t.Errorf("accepted = %v, want only the deprovision event with tunnel_id tun-42", rcv.got)
	}
	if rcv.badSigs != 0 || rcv.calls != 3 {
		t.Errorf("calls = %d (bad signatures %d), want 3 (two 500s, then accepted) all signed", rcv.calls, rcv.badSigs)
	}
	ds, err := st.Deliveries(ctx, 2)
	if err != nil || len(ds) != 3 || ds[0].StatusCode != 500 || ds[2].StatusCode != 200 || ds[2].Attempt != 3 {
		t.Errorf("deliveries = %+v, %v; want 500, 500, 200", ds, err)
	}
	if c, _ := st.WebhookCursor(ctx, "prov"); c != 2 {
		t.Errorf("cursor = %d, want 2", c)
	}
	for _, dl := range ds {
		if strings.Contains(dl.Error, sec.Reveal()) {
			t.Error("a delivery record holds the secret")
		}
	}
}
