package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// healthz returns the status code and reason of GET /healthz.
func healthz(t *testing.T, s *Server) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, api.PathHealthz, nil))
	var body struct{ Status, Reason string }
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("healthz body %q: %v", w.Body.String(), err)
	}
	return w.Code, body.Reason
}

func mount(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v: %s", args, err, out)
	}
}

// TestHealthzTellsTheTruthOnSQLite is issue 15's findings 7 and 12:
// /healthz said ok while every flush failed, and a read-only database gave
// an unclear error. The database sits on a small tmpfs that fills up;
// /healthz turns 503 with the reason and back to 200 by itself once space
// is freed. Opened through a read-only mount, the database says it is
// read-only and what to do.
func TestHealthzTellsTheTruthOnSQLite(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "mount")
	ctx := context.Background()
	mnt := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	mount(t, "-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	dsn := "sqlite://" + filepath.Join(mnt, "cp.db")
	c := startCP(t, dsn)
	if code, reason := healthz(t, c.srv); code != http.StatusOK {
		t.Fatalf("healthz of a healthy control plane = %d %s", code, reason)
	}

	// Disk full: a registration's write fails.
	fill := filepath.Join(mnt, "filler")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+fill, "bs=64k").CombinedOutput(); err == nil {
		t.Fatalf("dd filled an 8 MiB tmpfs without error: %s", out)
	}
	for i := 0; i < 50 && c.st.WriteHealth() == nil; i++ { // each write takes more pages
		_, _ = c.admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant"})
	}
	code, reason := healthz(t, c.srv)
	t.Logf("healthz on a full disk: %d %s", code, reason)
	if code != http.StatusServiceUnavailable || !errors.Is(c.st.WriteHealth(), store.ErrStorage) {
		t.Errorf("healthz on a full disk = %d %q (%v), want 503", code, reason, c.st.WriteHealth())
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	c.srv.checkStorage(ctx)
	if code, reason := healthz(t, c.srv); code != http.StatusOK {
		t.Errorf("healthz after space was freed = %d %q, want 200", code, reason)
	}

	// The same database through a read-only mount: Open says so.
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o700); err != nil {
		t.Fatal(err)
	}
	mount(t, "--bind", mnt, ro)
	t.Cleanup(func() { _ = exec.Command("umount", "-l", ro).Run() })
	mount(t, "-o", "remount,bind,ro", ro)
	_, err := store.Open(ctx, "sqlite://"+filepath.Join(ro, "cp.db"), nil)
	t.Logf("open read-only: %v", err)
	if err == nil || !errors.Is(err, store.ErrReadOnly) || !strings.Contains(err.Error(), "writable") {
		t.Errorf("Open of a read-only database err = %v, want one saying it is read-only and what to do", err)
	}
}

// TestHealthzTellsTheTruthOnPostgres: the database turns read-only
// (default_transaction_read_only, as on a standby) under a running control
// plane; /healthz turns 503 saying so, and 200 again once it is writable.
func TestHealthzTellsTheTruthOnPostgres(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	dsn, err := pg.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := startCP(t, dsn)
	db, err := sql.Open("pgx", pg.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	name := dsn[strings.LastIndex(dsn, "/")+1:]
	name, _, _ = strings.Cut(name, "?")
	// readOnly sets the database's default and ends its sessions, so the
	// control plane's next connections get the new default.
	readOnly := func(v string) {
		t.Helper()
		for _, q := range []string{`ALTER DATABASE "` + name + `" SET default_transaction_read_only = ` + v,
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '` + name + `' AND pid <> pg_backend_pid()`} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	readOnly("on")
	// The first write may meet a terminated session; the next one the
	// read-only default.
	for i := 0; i < 3 && !errors.Is(c.st.WriteHealth(), store.ErrReadOnly); i++ {
		c.srv.checkStorage(ctx)
		_ = c.st.Probe(ctx, c.clock.Now())
	}
	code, reason := healthz(t, c.srv)
	if code != http.StatusServiceUnavailable || !strings.Contains(reason, "read-only") {
		t.Errorf("healthz on a read-only database = %d %q, want 503 saying it is read-only", code, reason)
	}
	readOnly("off")
	for i := 0; i < 3 && c.st.WriteHealth() != nil; i++ {
		c.srv.checkStorage(ctx)
	}
	if code, reason := healthz(t, c.srv); code != http.StatusOK {
		t.Errorf("healthz once writable again = %d %q, want 200", code, reason)
	}
}
