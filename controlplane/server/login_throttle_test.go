package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// TestLoginThrottlePerClientAcrossReplicas is issue 15's finding 6: the
// dashboard's login throttle was global, so an attacker guessing locked the
// operator out. Now it is by source address (and, far looser, by account)
// and kept in the store: the attacker's guesses at one replica throttle it
// at the other, while the operator, elsewhere, still signs in.
func TestLoginThrottlePerClientAcrossReplicas(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		a := startCP(t, dsn)
		st, err := store.Open(t.Context(), dsn, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := New(t.Context(), Config{Store: st, AdminToken: secret.New(adminToken), Now: a.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			b.lv.close()
			_ = st.Close()
		})
		login := func(s *Server, from, token string) int {
			req := httptest.NewRequest(http.MethodPost, dashboard.Path+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = from
			w := httptest.NewRecorder()
			s.Handler().ServeHTTP(w, req)
			return w.Code
		}
		const attacker, operator = "192.0.2.1:4321", "198.51.100.7:5555"
		for i := range 10 {
			if code := login([]*Server{a.srv, b}[i%2], attacker, "guess"); code != http.StatusUnauthorized {
				t.Fatalf("guess #%d: %d, want 401", i+1, code)
			}
		}
		for _, s := range []*Server{a.srv, b} {
			if code := login(s, attacker, adminToken); code != http.StatusTooManyRequests {
				t.Errorf("the attacker's address after ten guesses: %d, want 429 at every replica", code)
			}
		}
		if code := login(b, operator, adminToken); code != http.StatusSeeOther {
			t.Errorf("the operator from another address: %d, want 303 (signed in)", code)
		}
		// An IPv6 client is one client per /64.
		for i := range 10 {
			if code := login(a.srv, fmt.Sprintf("[2001:db8::%x]:4321", i+1), "guess"); code != http.StatusUnauthorized {
				t.Fatalf("IPv6 guess #%d: %d, want 401", i+1, code)
			}
		}
		if code := login(b, "[2001:db8::ff]:1", adminToken); code != http.StatusTooManyRequests {
			t.Errorf("another address of the attacker's /64: %d, want 429", code)
		}
		a.clock.Add(2 * time.Minute)
		if code := login(b, attacker, adminToken); code != http.StatusSeeOther {
			t.Errorf("the throttled address two minutes later with the token: %d, want 303", code)
		}
	})
}
