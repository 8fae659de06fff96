// Package pgtest starts a throwaway PostgreSQL 15 cluster for tests: initdb
// and pg_ctl run as the postgres user (initdb refuses root) on a free
// loopback port, with the data directory in a temporary directory.
package pgtest

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for creating databases

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// BinDir holds the PostgreSQL 15 server binaries on Debian.
const BinDir = "/usr/lib/postgresql/15/bin"

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	dir  string
	data string
	port int
	n    atomic.Int64
}

// Require gates a test on what a cluster needs: root (to become postgres)
// and the PostgreSQL 15 binaries. Missing parts skip locally, fail in CI.
func Require(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, b := range []string{"initdb", "pg_ctl", "postgres"} {
		if _, err := os.Stat(filepath.Join(BinDir, b)); err != nil {
			testenv.Missing(t, "PostgreSQL 15 server ("+filepath.Join(BinDir, b)+"; apt-get install postgresql-15)")
		}
	}
	if _, err := user.Lookup("postgres"); err != nil {
		testenv.Missing(t, "the postgres user (apt-get install postgresql-15)")
	}
	testenv.RequireBinary(t, "runuser")
}

// Start gates t with Require, starts a cluster and stops it when t ends.
func Start(t testing.TB) *Cluster {
	t.Helper()
	Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	c, err := StartCluster(ctx)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	return c
}

// StartCluster starts a cluster; the caller must Stop it.
func StartCluster(ctx context.Context) (*Cluster, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("look up user postgres: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, data: filepath.Join(dir, "data")}
	fail := func(err error) (*Cluster, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Mkdir(c.data, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chown(c.data, uid, gid); err != nil {
		return fail(fmt.Errorf("chown data dir to postgres: %w", err))
	}
	if out, err := asPostgres(ctx, "initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C").CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w: %s", err, out))
	}
	if c.port, err = freePort(); err != nil {
		return fail(err)
	}
	if err := c.start(ctx); err != nil {
		return fail(err)
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", c.port, c.data)
	out, err := asPostgres(ctx, "pg_ctl", "-D", c.data, "-o", opts, "-l", filepath.Join(c.data, "server.log"), "-w", "-t", "30", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.data, "server.log"))
		return fmt.Errorf("pg_ctl start: %w: %s\n%s", err, out, log)
	}
	return nil
}

func asPostgres(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--", filepath.Join(BinDir, bin)}, args...)...)
	cmd.Dir = "/"
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DSN returns a URL for database db.
func (c *Cluster) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// NewDatabase creates an empty database and returns its DSN.
func (c *Cluster) NewDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d", c.n.Add(1))
	db, err := sql.Open("pgx", c.DSN("postgres"))
	if err != nil {
		return "", err
	}
	defer func() { _ = db.Close() }()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return c.DSN(name), nil
}

// Restart stops the server immediately (as a crash would) and starts it
// again on the same port.
func (c *Cluster) Restart(ctx context.Context) error {
	if out, err := asPostgres(ctx, "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return c.start(ctx)
}

// Stop stops the server and removes its files.
func (c *Cluster) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := asPostgres(ctx, "pg_ctl", "-D", c.data, "-m", "immediate", "-w", "stop").CombinedOutput()
	rmErr := os.RemoveAll(c.dir)
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return rmErr
}
