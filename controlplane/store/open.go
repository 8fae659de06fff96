package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"strings"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"github.com/pressly/goose/v3"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations
var migrations embed.FS

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// Open opens the store named by dsn and runs pending migrations:
//
//	sqlite:///var/lib/molecule-controlplane/cp.db   (absolute path)
//	sqlite://relative/path.db
//	postgres://user@host:5432/db?sslmode=disable     (or postgresql://)
func Open(ctx context.Context, dsn string, log *slog.Logger) (Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		d      dialect
		driver string
		conn   string
		gd     goose.Dialect
		sub    string
	)
	switch {
	case strings.HasPrefix(dsn, "sqlite://"):
		path := strings.TrimPrefix(dsn, "sqlite://")
		if path == "" {
			return nil, fmt.Errorf("--db %q: want sqlite:///path/to/file.db", dsn)
		}
		d, driver, gd, sub = sqlite, "sqlite", goose.DialectSQLite3, "migrations/sqlite"
		q := url.Values{}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Set("_txlock", "immediate")
		conn = "file:" + path + "?" + q.Encode()
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		d, driver, gd, sub, conn = postgres, "pgx", goose.DialectPostgres, "migrations/postgres", dsn
	default:
		return nil, fmt.Errorf("--db: want sqlite:///path or postgres://...; got a value with an unknown scheme")
	}
	db, err := sql.Open(driver, conn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if d == sqlite {
		// One connection: SQLite has one writer anyway, and this keeps
		// transactions from ever meeting SQLITE_BUSY.
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(16)
		db.SetMaxIdleConns(16)
	}
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	fsys, err := fs.Sub(migrations, sub)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(gd, db, fsys)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		_ = db.Close()
		if kind := storageFault(err); kind != nil {
			return nil, fmt.Errorf("run migrations: %w: %w", kind, err)
		}
		return nil, fmt.Errorf("run migrations: %w", err)
	}
	for _, r := range res {
		log.Info("applied migration", "version", r.Source.Version, "duration", r.Duration)
	}
	s := &sqlStore{db: db, d: d}
	// A database that opens but cannot write says so now, not at the first
	// registration.
	if err := s.Probe(ctx, time.Now()); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	return s, nil
}
