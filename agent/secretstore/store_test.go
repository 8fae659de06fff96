//go:build unix

package secretstore_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

func TestStoreRotation(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	values := tenant(s)
	src := newSSM(t, s, s.Credentials(), 1)
	logs, ch := &logBuffer{}, &changes{}

	loaded := secretstore.NewStore(src, secretstore.StoreOptions{Refresh: time.Hour})
	if err := loaded.Load(t.Context()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if v, ok := loaded.Get("db/password"); !ok || v.Reveal() != values["db/password"] {
		t.Fatalf("Get(db/password) present %v, right value %v", ok, v.Reveal() == values["db/password"])
	}

	st, _ := runStore(t, src, logs, ch)
	waitFor(t, "the first load", func() bool { return st.Status().Loaded })
	first := len(ch.get())

	// Unchanged values: several refreshes, no change reported.
	n := len(s.Requests())
	waitFor(t, "three refreshes", func() bool { return len(s.Requests()) >= n+3 })
	if got := ch.get(); len(got) != first {
		t.Fatalf("OnChange calls with nothing rotated = %v, want none", got[first:])
	}

	// One rotation: exactly that name, once.
	s.Rotate(prefix+"/tunnel-token", "tun-rotated-2")
	waitFor(t, "the rotation", func() bool { return len(ch.get()) > first })
	if got := ch.get()[first]; !slices.Equal(got, []string{"tunnel-token"}) {
		t.Errorf("OnChange after rotating tunnel-token = %v, want [tunnel-token]", got)
	}
	if v, _ := st.Get("tunnel-token"); v.Reveal() != "tun-rotated-2" {
		t.Error("Get(tunnel-token) did not return the rotated value")
	}

	// A removed and an added parameter are changes too.
	s.Delete(prefix + "/db/user")
	s.PutSecure(prefix+"/new-key", "new-key-value-3")
	waitFor(t, "add and remove", func() bool { return len(ch.get()) > first+1 })
	if got := ch.get()[first+1]; !slices.Equal(got, []string{"db/user", "new-key"}) {
		t.Errorf("OnChange after delete+add = %v, want [db/user new-key]", got)
	}

	// A failing refresh keeps the last good values and reports the error.
	s.Deny(prefix)
	waitFor(t, "a failed refresh", func() bool { return st.Status().LastError != "" })
	if v, ok := st.Get("tunnel-token"); !ok || v.Reveal() != "tun-rotated-2" {
		t.Error("after a failed refresh the last good tunnel-token is gone")
	}
	if _, err := st.Resolve("secret:tunnel-token"); err != nil {
		t.Errorf("Resolve after a failed refresh: %v, want the last good value", err)
	}
	if !strings.Contains(logs.String(), "secrets refresh failed; keeping last good values") {
		t.Error("a failed refresh was not logged")
	}
	s.AllowAll()
	waitFor(t, "recovery", func() bool { return st.Status().LastError == "" })
	values["rotated"], values["new"] = "tun-rotated-2", "new-key-value-3"
	assertNoValues(t, "the log", logs.String(), values)
}

func TestStoreResolve(t *testing.T) {
	t.Parallel()
	st := secretstore.NewStore(secretstore.NewFile(writeTemp(t, "tunnel-token: tok-abc\n")), secretstore.StoreOptions{})
	if _, err := st.Resolve("secret:tunnel-token"); err == nil || !strings.Contains(err.Error(), "not fetched yet") {
		t.Errorf("Resolve before any fetch = %v, want a not-fetched-yet error", err)
	}
	if err := st.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "secret:tunnel-token", want: "tok-abc"},
		{in: "plain value", want: "plain value"},
		{in: "", want: ""},
		{in: "secret:nope", wantErr: "parameter nope missing under "},
		{in: "secret:", wantErr: "empty secret name"},
		{in: "secret:../etc", wantErr: "path segment"},
	}
	for _, tt := range tests {
		got, err := st.Resolve(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.Reveal() != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.in, got.Reveal(), err, tt.want)
		}
	}
	var me *secretstore.MissingError
	if _, err := st.Resolve("secret:nope"); !errors.As(err, &me) || me.Name != "nope" {
		t.Errorf("missing reference error = %v, want *MissingError for nope", err)
	}
}

func TestLoadStopsOnPermanentError(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	tenant(s)
	s.Deny(prefix)
	logs := &logBuffer{}
	st := secretstore.NewStore(newSSM(t, s, s.Credentials(), 1), secretstore.StoreOptions{Logger: logs.logger(), BootBackoff: time.Millisecond})
	err := st.Load(t.Context())
	if !errors.Is(err, secretstore.ErrAccessDenied) {
		t.Fatalf("Load = %v, want ErrAccessDenied", err)
	}
	if got := s.Count("GetParametersByPath", "AccessDeniedException"); got != 1 {
		t.Errorf("denied requests = %d, want 1 (no retry on a permanent error)", got)
	}
	if strings.Contains(logs.String(), "retrying") {
		t.Errorf("permanent error logged a retry: %s", logs.String())
	}
}

func TestLoadHonoursContext(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	s.SetDown(ssmtest.Down503)
	st := secretstore.NewStore(newSSM(t, s, s.Credentials(), 1), secretstore.StoreOptions{BootBackoff: time.Millisecond})
	ctx, cancel := contextAfter(t, func() bool { return s.Count("", "ServiceUnavailable") >= 3 })
	defer cancel()
	if err := st.Load(ctx); !errors.Is(err, ctx.Err()) || ctx.Err() == nil {
		t.Errorf("Load after cancel = %v, want the context's error", err)
	}
}

func TestStoreOptionsDefaults(t *testing.T) {
	t.Parallel()
	st := secretstore.NewStore(secretstore.NewFile("/nonexistent"), secretstore.StoreOptions{})
	if got := st.Status(); got.Source != "/nonexistent" || got.Loaded || got.Count != 0 {
		t.Errorf("fresh status = %+v, want source /nonexistent, not loaded", got)
	}
	err := st.Load(t.Context())
	if !errors.Is(err, secretstore.ErrInvalid) || !strings.Contains(st.Status().LastError, "open secrets file") {
		t.Errorf("Load of a missing file = %v (status %q), want ErrInvalid naming the file", err, st.Status().LastError)
	}
}

// writeTemp writes content to a fresh file and returns its path.
func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// contextAfter returns a context cancelled once cond holds.
func contextAfter(t *testing.T, cond func() bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		defer cancel()
		for !cond() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return ctx, cancel
}
