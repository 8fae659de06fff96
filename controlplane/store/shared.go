package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Shared is the liveness state several control-plane replicas share in one
// PostgreSQL database. Each replica keeps heartbeats in memory and flushes
// them with FlushShared (one transaction per window); the one replica that
// holds the sweeper lock judges silence from the database with Census and
// MarkOffline.
type Shared interface {
	// FlushShared writes one replica's flush window in one transaction:
	// last_seen (never backwards), reports and events. A host stored
	// offline whose flushed heartbeat is newer than its offline mark
	// becomes online with an "online" event. It never writes a host's
	// status from the replica's memory otherwise, and returns the IDs among
	// updates whose host was deprovisioned (by any replica).
	FlushShared(ctx context.Context, updates []LiveUpdate, events []Event) (removed []string, err error)
	// Census counts online hosts, those not seen since suspect, and those
	// not seen since cutoff. It only reads.
	Census(ctx context.Context, suspect, cutoff time.Time) (Census, error)
	// MarkOffline marks every online host not seen since cutoff offline,
	// with an "offline" event each, in one transaction, and returns them.
	MarkOffline(ctx context.Context, cutoff, now time.Time) ([]Host, error)
	// Leader takes the sweeper lock (a PostgreSQL advisory lock held by a
	// dedicated connection) or checks that it is still held. It reports
	// whether this replica holds it. A lost connection loses the lock.
	Leader(ctx context.Context) (bool, error)
	// Resign releases the sweeper lock, if held.
	Resign()
	// CountByStatus counts the stored hosts by status.
	CountByStatus(ctx context.Context) (map[string]int, error)
	// LastFailure is when a call above last failed (zero: never). The
	// database may then be missing flushes, so the sweeper waits a full
	// window after it before judging anyone.
	LastFailure() time.Time
}

// Census is what the sweeper counts before it marks anyone offline.
type Census struct {
	Online  int // hosts stored online
	Silent  int // online hosts not seen since the suspect time
	Overdue int // online hosts not seen since the offline cutoff
}

// SweeperLockKey is the PostgreSQL advisory lock key of the sweeper.
const SweeperLockKey int64 = 0x6d6f6c6563756c65 // "molecule"

// SharedOf returns st's shared liveness if st is a PostgreSQL store, else
// nil (SQLite serves one control plane, which judges liveness in memory).
func SharedOf(st Store) Shared {
	s, ok := st.(*sqlStore)
	if !ok || s.d != postgres {
		return nil
	}
	return &pgShared{s: s}
}

type pgShared struct {
	s *sqlStore

	mu   sync.Mutex
	conn *sql.Conn // holds the advisory lock while not nil

	failed atomic.Int64 // unix nanoseconds of the last failure
}

func (p *pgShared) LastFailure() time.Time {
	if n := p.failed.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// note records err, if any, as a failure and returns it.
func (p *pgShared) note(err error) error {
	if err != nil {
		p.failed.Store(time.Now().UnixNano())
	}
	return err
}

func (p *pgShared) FlushShared(ctx context.Context, updates []LiveUpdate, events []Event) ([]string, error) {
	removed, err := p.flush(ctx, updates, events)
	return removed, p.note(err)
}

func (p *pgShared) flush(ctx context.Context, updates []LiveUpdate, events []Event) ([]string, error) {
	if len(updates) == 0 && len(events) == 0 {
		return nil, nil
	}
	seen := make(map[string]int64, len(updates))
	for _, u := range updates {
		if !u.LastSeen.IsZero() {
			seen[u.HostID] = ms(u.LastSeen)
		}
	}
	batch, err := json.Marshal(seen)
	if err != nil {
		return nil, fmt.Errorf("encode flush batch: %w", err)
	}
	var removed []string
	err = p.s.write(ctx, func(tx *sql.Tx) error {
		if len(seen) > 0 {
			// Back online: offline hosts with a heartbeat after their offline mark.
			rows, err := tx.QueryContext(ctx, `UPDATE hosts SET status = 'online', updated_at = j.value::bigint
				FROM jsonb_each_text($1::jsonb) AS j
				WHERE hosts.id = j.key AND hosts.status = 'offline' AND j.value::bigint > hosts.updated_at
				RETURNING hosts.id, j.value::bigint`, string(batch))
			if err != nil {
				return fmt.Errorf("flush status of %d hosts: %w", len(seen), err)
			}
			var back []Event
			for rows.Next() {
				var e Event
				var at int64
				if err := rows.Scan(&e.HostID, &at); err != nil {
					_ = rows.Close()
					return fmt.Errorf("flush status: %w", err)
				}
				e.Type, e.Detail, e.At = "online", "heartbeat after silence", fromMS(at)
				back = append(back, e)
			}
			if err := rows.Close(); err != nil {
				return fmt.Errorf("flush status: %w", err)
			}
			if err := p.s.insertEvents(ctx, tx, back); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE hosts SET last_seen = j.value::bigint FROM jsonb_each_text($1::jsonb) AS j
				WHERE hosts.id = j.key AND hosts.last_seen < j.value::bigint AND hosts.status <> 'removed'`, string(batch)); err != nil {
				return fmt.Errorf("flush last_seen of %d hosts: %w", len(seen), err)
			}
			rows, err = tx.QueryContext(ctx, `SELECT hosts.id FROM hosts JOIN jsonb_each_text($1::jsonb) AS j ON hosts.id = j.key
				WHERE hosts.status = 'removed'`, string(batch))
			if err != nil {
				return fmt.Errorf("flush: find removed hosts: %w", err)
			}
			removed = removed[:0]
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					_ = rows.Close()
					return fmt.Errorf("flush: find removed hosts: %w", err)
				}
				removed = append(removed, id)
			}
			if err := rows.Close(); err != nil {
				return fmt.Errorf("flush: find removed hosts: %w", err)
			}
		}
		for _, u := range updates {
			if u.Report != "" {
				if _, err := tx.ExecContext(ctx, `UPDATE hosts SET report = $1, agent_version = $2
					WHERE id = $3 AND status <> 'removed'`, u.Report, u.AgentVersion, u.HostID); err != nil {
					return fmt.Errorf("flush report of host %s: %w", u.HostID, err)
				}
				if err := p.s.reportTunnel(ctx, tx, u.HostID, u.TunnelID, u.LastSeen); err != nil {
					return err
				}
			}
		}
		return p.s.insertEvents(ctx, tx, events)
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

func (p *pgShared) CountByStatus(ctx context.Context) (map[string]int, error) {
	rows, err := p.s.db.QueryContext(ctx, `SELECT status, count(*) FROM hosts GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count hosts by status: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("count hosts by status: %w", err)
		}
		out[st] = n
	}
	return out, rows.Err()
}

func (p *pgShared) Census(ctx context.Context, suspect, cutoff time.Time) (Census, error) {
	var c Census
	err := p.s.db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE last_seen < $1), count(*) FILTER (WHERE last_seen < $2)
		FROM hosts WHERE status = 'online'`, ms(suspect), ms(cutoff)).Scan(&c.Online, &c.Silent, &c.Overdue)
	if p.note(err) != nil {
		return Census{}, fmt.Errorf("count silent hosts: %w", err)
	}
	return c, nil
}

func (p *pgShared) MarkOffline(ctx context.Context, cutoff, now time.Time) ([]Host, error) {
	var out []Host
	err := p.s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `UPDATE hosts SET status = 'offline', updated_at = $1
			WHERE status = 'online' AND last_seen < $2 RETURNING `+hostCols, ms(now), ms(cutoff))
		if err != nil {
			return fmt.Errorf("mark silent hosts offline: %w", err)
		}
		out = out[:0]
		for rows.Next() {
			h, err := scanHost(rows)
			if err != nil {
				_ = rows.Close()
				return fmt.Errorf("mark silent hosts offline: %w", err)
			}
			out = append(out, h)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("mark silent hosts offline: %w", err)
		}
		evs := make([]Event, 0, len(out))
		for _, h := range out {
			evs = append(evs, Event{HostID: h.ID, Type: "offline", Detail: "silent since " + h.LastSeen.Format(time.RFC3339), At: now})
		}
		return p.s.insertEvents(ctx, tx, evs)
	})
	if p.note(err) != nil {
		return nil, err
	}
	return out, nil
}

func (p *pgShared) Leader(ctx context.Context) (bool, error) {
	ok, err := p.leader(ctx)
	return ok, p.note(err)
}

func (p *pgShared) leader(ctx context.Context) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		// Still ours while the session lives.
		if err := p.conn.PingContext(ctx); err != nil {
			_ = p.conn.Raw(func(any) error { return driver.ErrBadConn }) // discard the broken session
			_ = p.conn.Close()
			p.conn = nil
			return false, fmt.Errorf("sweeper lock connection lost: %w", err)
		}
		return true, nil
	}
	conn, err := p.s.db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("sweeper lock: connect: %w", err)
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, SweeperLockKey).Scan(&got); err != nil {
		_ = conn.Close()
		return false, fmt.Errorf("sweeper lock: %w", err)
	}
	if !got {
		_ = conn.Close()
		return false, nil
	}
	p.conn = conn
	return true, nil
}

func (p *pgShared) Resign() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = p.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, SweeperLockKey)
	_ = p.conn.Close()
	p.conn = nil
}
