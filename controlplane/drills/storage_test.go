package drills

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver to inspect the database
	_ "modernc.org/sqlite"             // "sqlite" driver to inspect the database

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/sim"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

const storageHosts = 200

// fill writes to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			break
		}
	}
	small := make([]byte, 512)
	for { // the last partial block
		if _, err := f.Write(small); err != nil {
			break
		}
	}
}

// TestSQLiteDiskFull: the SQLite file sits on a small tmpfs that fills up
// under load. Heartbeats keep being answered from memory while flushes
// fail; once space is freed the next flushes write everyone's state and
// the database passes PRAGMA integrity_check.
func TestSQLiteDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireBinary(t, "mount")
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.Long)
	defer cancel()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "db")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	tokFile, admin := adminToken(t, dir)
	dbPath := filepath.Join(mnt, "cp.db")
	c := newCP(t, "sqlite://"+dbPath, tokFile)
	c.start()
	f, err := sim.Enroll(ctx, sim.FleetConfig{URL: c.url(), AdminToken: admin, Hosts: storageHosts})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Start(ctx)
	time.Sleep(2 * interval) // under load (the scenario)

	full := time.Now()
	fill(t, filepath.Join(mnt, "filler"))
	errs0 := c.metric(t, "molecule_cp_flush_errors_total")
	eventually(t, testenv.Short, "flushes failing on the full disk", func() bool {
		return c.metric(t, "molecule_cp_flush_errors_total") > errs0
	})
	time.Sleep(window) // a full window on a full disk
	if w := f.Window(full, time.Now()); w.Errors != 0 || w.Heartbeats == 0 {
		t.Errorf("on a full disk: %d heartbeats answered, %d errors; want all answered", w.Heartbeats, w.Errors)
	}
	if n, err := f.OfflineSince(ctx, full, nil); err != nil || n != 0 {
		t.Errorf("%d hosts offline on a full disk (%v), want 0", n, err)
	}

	if err := os.Remove(filepath.Join(mnt, "filler")); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	flushes := c.metric(t, "molecule_cp_flushes_total")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control plane log:\n%s", c.log.String())
		}
	})
	eventually(t, testenv.Short, "flushes succeeding again", func() bool {
		return c.metric(t, "molecule_cp_flushes_total") >= flushes+2
	})
	f.Stop()
	c.stop(syscall.SIGTERM)
	checkCaughtUp(t, ctx, "sqlite", "file:"+dbPath, freed)
	db, err := sql.Open("sqlite", "file:"+dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var ok string
	if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("PRAGMA integrity_check = %q, %v; want ok", ok, err)
	}
}

// TestPostgresRestartMidLoad: PostgreSQL crashes and restarts under load,
// repeatedly, for two windows.
// Heartbeats keep being answered, nobody is marked offline, the sweeper
// lock is taken again and every host's state reaches the database.
func TestPostgresRestartMidLoad(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*testenv.Long)
	defer cancel()
	dsn, err := pg.NewDatabase(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tokFile, admin := adminToken(t, t.TempDir())
	c := newCP(t, dsn, tokFile)
	c.start()
	f, err := sim.Enroll(ctx, sim.FleetConfig{URL: c.url(), AdminToken: admin, Hosts: storageHosts})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Start(ctx)
	time.Sleep(window + interval) // under load, past the restart window (the scenario)

	// It crashes and restarts again and again for two windows: the flushes,
	// the sweeper's census and its lock connection keep failing.
	crash := time.Now()
	restarts := 0
	for time.Since(crash) < 2*window {
		if err := pg.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		restarts++
	}
	back := time.Now()
	t.Logf("PostgreSQL crashed and restarted %d times in %s", restarts, back.Sub(crash).Round(time.Millisecond))
	flushes := c.metric(t, "molecule_cp_flushes_total")
	eventually(t, testenv.Short, "flushes succeeding again", func() bool {
		return c.metric(t, "molecule_cp_flushes_total") >= flushes+2
	})
	eventually(t, testenv.Short, "the sweeper lock taken again", func() bool {
		h, err := c.health()
		return err == nil && h.Sweeper
	})
	if n := c.metric(t, "molecule_cp_sweeper_lock_acquired_total"); n < 2 {
		t.Errorf("sweeper lock taken %v times, want lost with the database and taken again", n)
	}
	time.Sleep(2 * window) // long enough for a wrong offline to show
	if w := f.Window(crash, time.Now()); w.Errors != 0 || w.Heartbeats == 0 {
		t.Errorf("across the database restart: %d heartbeats answered, %d errors; want all answered", w.Heartbeats, w.Errors)
	}
	if n, err := f.OfflineSince(ctx, crash, nil); err != nil || n != 0 {
		t.Errorf("%d hosts offline after the database restart (%v), want 0", n, err)
	}
	f.Stop()
	c.stop(syscall.SIGTERM)
	checkCaughtUp(t, ctx, "pgx", dsn, back)
}

// checkCaughtUp checks that every host is stored, online, with a last_seen
// from after the fault ended.
func checkCaughtUp(t *testing.T, ctx context.Context, driver, dsn string, since time.Time) {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close() }()
	var n, online int
	var oldest int64
	if err := db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE status = 'online'), coalesce(min(last_seen), 0) FROM hosts`).
		Scan(&n, &online, &oldest); err != nil {
		t.Fatal(err)
	}
	if n != storageHosts || online != storageHosts {
		t.Errorf("stored %d hosts, %d online; want %d, all online", n, online, storageHosts)
	}
	if got := time.UnixMilli(oldest); got.Before(since) {
		t.Errorf("oldest stored last_seen %s is before the fault ended (%s): state did not catch up", got.Format(time.StampMilli), since.Format(time.StampMilli))
	}
}
