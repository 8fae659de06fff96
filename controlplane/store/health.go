package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// ErrReadOnly: the database refuses writes.
var ErrReadOnly = errors.New("the database is read-only: for SQLite make the database file, its -wal and -shm files " +
	"and their directory writable by the control plane's user on a filesystem mounted read-write; " +
	"for PostgreSQL connect to the primary, not a standby, with default_transaction_read_only off")

// ErrStorage: the database cannot take writes (disk full, I/O error, lost
// connection). The control plane keeps serving from memory and retries.
var ErrStorage = errors.New("storage writes are failing (free disk space, fix the I/O error or restore the database " +
	"connection; live state waits in memory and is written once storage takes writes again)")

// writeHealth remembers the last storage fault until a write succeeds.
type writeHealth struct {
	mu    sync.Mutex
	fault error
}

func (w *writeHealth) set(err error) {
	w.mu.Lock()
	w.fault = err
	w.mu.Unlock()
}

func (w *writeHealth) get() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fault
}

func (s *sqlStore) WriteHealth() error { return s.health.get() }

// noteWrite classifies the outcome of a write transaction: a storage fault
// is recorded (and made to say what to do), a success clears the last
// fault, other errors (a refusal, a conflict) leave it.
func (s *sqlStore) noteWrite(err error) error {
	if err == nil {
		s.health.set(nil)
		return nil
	}
	kind := storageFault(err)
	if kind == nil {
		return err
	}
	err = fmt.Errorf("%w: %w", kind, err)
	s.health.set(err)
	return err
}

// storageFault returns ErrReadOnly or ErrStorage when err means the
// database cannot write, else nil.
func storageFault(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	var lite interface{ Code() int }
	if errors.As(err, &lite) {
		switch lite.Code() & 0xff {
		case 8: // SQLITE_READONLY
			return ErrReadOnly
		case 10, 13, 14: // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
			return ErrStorage
		}
		return nil
	}
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		switch st := pg.SQLState(); {
		case st == "25006": // read_only_sql_transaction
			return ErrReadOnly
		case strings.HasPrefix(st, "53"), strings.HasPrefix(st, "58"), strings.HasPrefix(st, "08"), strings.HasPrefix(st, "57P"):
			return ErrStorage // insufficient resources, system error, connection, shutdown
		}
		return nil
	}
	var ne net.Error
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.As(err, &ne) ||
		strings.Contains(err.Error(), "conn closed") {
		return ErrStorage
	}
	return nil
}

func (s *sqlStore) Probe(ctx context.Context, now time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO health_probe (id, at) VALUES (1, ?)
			ON CONFLICT (id) DO UPDATE SET at = excluded.at`), ms(now)); err != nil {
			return fmt.Errorf("health probe write: %w", err)
		}
		return nil
	})
}
