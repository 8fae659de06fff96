//go:build unix

package secretstore_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "/molecule/prod/tenants/acme"

// newSSM returns a source using the real SDK client against s.
func newSSM(t *testing.T, s *ssmtest.Server, creds aws.CredentialsProvider, attempts int) *secretstore.SSM {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	src, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{
		Prefix: prefix, Region: ssmtest.Region, Endpoint: s.URL, Credentials: creds,
		HTTPClient: &http.Client{Transport: tr}, MaxAttempts: attempts, MaxBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatalf("NewSSM: %v", err)
	}
	return src
}

// tenant fills s with the acme tenant's secrets (plus a neighbour's) and
// returns the values by relative name.
func tenant(s *ssmtest.Server) map[string]string {
	want := map[string]string{
		"tunnel-token": "tun-0f9a8b7c6d5e",
		"admin-token":  "adm-1a2b3c4d5e6f",
		"db/password":  "pw-9z8y7x6w5v",
		"db/user":      "app_user_7q",
	}
	for n, v := range want {
		s.PutSecure(prefix+"/"+n, v)
	}
	for i := range 12 { // enough to need more than one page
		n := fmt.Sprintf("bulk/p%02d", i)
		want[n] = fmt.Sprintf("bulk-value-%02d", i)
		s.Put(prefix+"/"+n, want[n])
	}
	s.PutSecure("/molecule/prod/tenants/acme-other/tunnel-token", "not-ours")
	s.PutSecure("/molecule/prod/tenants/other/tunnel-token", "not-ours-either")
	return want
}

func TestSSMFetch(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	want := tenant(s)
	got, err := newSSM(t, s, s.Credentials(), 1).Fetch(t.Context())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if len(got) != len(want) {
		t.Errorf("got %d secrets, want %d", len(got), len(want))
	}
	for n, v := range want {
		if g, ok := got[n]; !ok || g.Reveal() != v {
			t.Errorf("secret %s: present %v, right value %v", n, ok, g.Reveal() == v)
		}
	}
	pages := 0
	for _, r := range s.Requests() {
		if r.Op != "GetParametersByPath" || r.Path != prefix || !r.WithDecryption {
			t.Errorf("request %+v, want GetParametersByPath %s WithDecryption", r, prefix)
		}
		pages++
	}
	if pages < 2 {
		t.Errorf("fetched in %d pages, want all pages (>= 2)", pages)
	}
}

func TestNewSSMOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		prefix, want string
	}{
		{"", "secrets.prefix is empty"},
		{"molecule/prod", "must start with /"},
		{"/molecule//prod", "path segment"},
		{"/molecule/pr od", "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			_, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{Prefix: tt.prefix, Region: "us-east-1"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewSSM(%q) error = %v, want it to contain %q", tt.prefix, err, tt.want)
			}
		})
	}
	t.Run("trailing slash", func(t *testing.T) {
		src, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{Prefix: prefix + "/", Region: "us-east-1"})
		if err != nil || src.Location() != prefix {
			t.Errorf("NewSSM(%s/) = %v, %v; want location %s", prefix, src, err, prefix)
		}
	})
}

// logBuffer is a concurrency-safe log sink for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// assertNoValues fails if any secret value appears in text.
func assertNoValues(t *testing.T, what, text string, values map[string]string) {
	t.Helper()
	for n, v := range values {
		if len(v) >= 6 && strings.Contains(text, v) {
			t.Errorf("%s contains the value of %s", what, n)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
