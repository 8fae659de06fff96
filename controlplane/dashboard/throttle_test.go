package dashboard_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// TestLoginThrottleByAccount: besides each address's bucket, failed
// sign-ins from everywhere draw on the account's, far larger one, in the
// shared store or, without one, in the process.
func TestLoginThrottleByAccount(t *testing.T) {
	st, err := store.Open(t.Context(), "sqlite://"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name     string
		throttle dashboard.Throttle
	}{{"shared store", st}, {"in process", nil}} {
		t.Run(tt.name, func(t *testing.T) {
			d := dashboard.New(dashboard.Options{AdminToken: secret.New(adminToken), Now: func() time.Time { return now },
				Throttle: tt.throttle, PerAccount: store.Bucket{Burst: 3, PerMinute: 1}})
			login := func(from, token string) int {
				req := httptest.NewRequest(http.MethodPost, dashboard.Path+"/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.RemoteAddr = from
				w := httptest.NewRecorder()
				d.ServeHTTP(w, req)
				return w.Code
			}
			for i := range 3 {
				if code := login(fmt.Sprintf("203.0.113.%d:1", i+1), "guess"); code != http.StatusUnauthorized {
					t.Fatalf("guess from address %d: %d, want 401", i+1, code)
				}
			}
			if code := login("203.0.113.99:1", adminToken); code != http.StatusTooManyRequests {
				t.Errorf("sign-in after the account's bucket emptied: %d, want 429", code)
			}
			now = now.Add(90 * time.Second)
			if code := login("203.0.113.99:1", adminToken); code != http.StatusSeeOther {
				t.Errorf("sign-in once the account's bucket refilled: %d, want 303", code)
			}
		})
	}
}
