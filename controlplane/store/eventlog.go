package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// EventPolicy bounds the events table. Every replica applies it to the one
// shared table, so the bounds hold across replicas. The budget, per the
// defaults: a host adds at most HostBudget rows a minute, plus one
// "events_suppressed" row per coalescing window counting what was dropped;
// a repeat of a subject (a unit failing again) within CoalesceWindow adds no
// row; no row's detail exceeds MaxEventDetail bytes; the trimmer keeps at
// most MaxRows rows, none older than MaxAge. So the table holds at most
// MaxRows × (MaxEventDetail + ~300) bytes of events: about 130 MB with the
// defaults.
type EventPolicy struct {
	// HostBudget is how many rows one host may add per minute
	// (default 30). Deprovision, online and offline events are never
	// dropped (the control plane itself bounds how often they happen).
	HostBudget int
	// CoalesceWindow: a repeat of a host's (type, subject) within it bumps
	// the stored event (default 10m).
	CoalesceWindow time.Duration
	// MaxAge and MaxRows bound what TrimEvents keeps (defaults 30 days and
	// 100,000 rows).
	MaxAge  time.Duration
	MaxRows int
}

// MaxEventDetail caps an event's detail (bytes); longer ones are cut.
const MaxEventDetail = 1024

// EventSuppressed is the event that counts events a host's budget dropped.
const EventSuppressed = "events_suppressed"

// DefaultEventPolicy is the policy of a new store.
var DefaultEventPolicy = EventPolicy{HostBudget: 30, CoalesceWindow: 10 * time.Minute, MaxAge: 30 * 24 * time.Hour, MaxRows: 100_000}

// EventLog bounds the events table.
type EventLog interface {
	// SetEventPolicy replaces the policy; zero fields take the defaults.
	SetEventPolicy(p EventPolicy)
	// EventPolicy returns the policy in force.
	EventPolicy() EventPolicy
	// TrimEvents deletes events last seen before now - MaxAge, then the
	// oldest beyond MaxRows, and returns how many it deleted.
	TrimEvents(ctx context.Context, now time.Time) (int64, error)
}

func (s *sqlStore) SetEventPolicy(p EventPolicy) {
	d := DefaultEventPolicy
	if p.HostBudget <= 0 {
		p.HostBudget = d.HostBudget
	}
	if p.CoalesceWindow <= 0 {
		p.CoalesceWindow = d.CoalesceWindow
	}
	if p.MaxAge <= 0 {
		p.MaxAge = d.MaxAge
	}
	if p.MaxRows <= 0 {
		p.MaxRows = d.MaxRows
	}
	s.policy.Store(&p)
}

func (s *sqlStore) EventPolicy() EventPolicy {
	if p := s.policy.Load(); p != nil {
		return *p
	}
	return DefaultEventPolicy
}

// exempt events are never dropped by a budget: a deprovision carries the
// tunnel to delete, and the control plane judges online and offline itself
// (at most one of each per offline window), so a mass silence of thousands
// of hosts costs no budget lookups.
func exempt(e Event) bool {
	return e.HostID == "" || e.Type == "removed" || e.Type == "online" || e.Type == "offline"
}

// cut returns s cut to at most n bytes of valid UTF-8.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// insertEvents records evs in tx under the event policy: repeats coalesce,
// and a host over its budget has its events counted in one suppressed
// event instead.
func (s *sqlStore) insertEvents(ctx context.Context, tx *sql.Tx, evs []Event) error {
	p := s.EventPolicy()
	recent := map[string]int{} // host -> rows added in the last minute
	for _, e := range evs {
		e.Detail, e.Subject = cut(e.Detail, MaxEventDetail), cut(e.Subject, 256)
		if e.Subject != "" {
			ok, err := s.coalesce(ctx, tx, e, p.CoalesceWindow)
			if err != nil {
				return err
			}
			if ok {
				continue
			}
		}
		if !exempt(e) {
			n, ok := recent[e.HostID]
			if !ok {
				if err := tx.QueryRowContext(ctx, s.q(`SELECT count(*) FROM events WHERE host_id = ? AND at > ?`),
					e.HostID, ms(e.At.Add(-time.Minute))).Scan(&n); err != nil {
					return fmt.Errorf("count recent events of host %s: %w", e.HostID, err)
				}
			}
			if n >= p.HostBudget {
				sup := Event{HostID: e.HostID, Type: EventSuppressed, Subject: "budget", At: e.At,
					Detail: fmt.Sprintf("over the budget of %d events a minute; last dropped: %s: %s", p.HostBudget, e.Type, cut(e.Detail, 200))}
				ok, err := s.coalesce(ctx, tx, sup, p.CoalesceWindow)
				if err != nil {
					return err
				}
				if ok {
					continue
				}
				e = sup
			}
			recent[e.HostID] = n + 1
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO events (host_id, type, detail, at, subject, occurrences, last_at)
			VALUES (?, ?, ?, ?, ?, 1, ?)`), e.HostID, e.Type, e.Detail, ms(e.At), e.Subject, ms(e.At)); err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
	}
	return nil
}

// coalesce bumps the host's last event of e's type and subject when it was
// last seen within window of e, and reports whether it did.
func (s *sqlStore) coalesce(ctx context.Context, tx *sql.Tx, e Event, window time.Duration) (bool, error) {
	var id, last int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT id, last_at FROM events WHERE host_id = ? AND type = ? AND subject = ?
		ORDER BY id DESC LIMIT 1`), e.HostID, e.Type, e.Subject).Scan(&id, &last)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && ms(e.At)-last > window.Milliseconds()) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find event to coalesce: %w", err)
	}
	if _, err := tx.ExecContext(ctx, s.q(`UPDATE events SET occurrences = occurrences + 1, detail = ?,
		last_at = CASE WHEN last_at < ? THEN ? ELSE last_at END WHERE id = ?`), e.Detail, ms(e.At), ms(e.At), id); err != nil {
		return false, fmt.Errorf("coalesce event: %w", err)
	}
	return true, nil
}

func (s *sqlStore) TrimEvents(ctx context.Context, now time.Time) (int64, error) {
	p := s.EventPolicy()
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		n = 0
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM events WHERE last_at < ?`), ms(now.Add(-p.MaxAge)))
		if err != nil {
			return fmt.Errorf("trim old events: %w", err)
		}
		old, _ := res.RowsAffected()
		res, err = tx.ExecContext(ctx, s.q(`DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)`), p.MaxRows)
		if err != nil {
			return fmt.Errorf("trim events beyond %d rows: %w", p.MaxRows, err)
		}
		over, _ := res.RowsAffected()
		n = old + over
		return nil
	})
	return n, err
}

const eventCols = `id, host_id, type, detail, at, subject, occurrences, last_at`

func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer func() { _ = rows.Close() }()
	var out []Event
	for rows.Next() {
		var e Event
		var at, last int64
		if err := rows.Scan(&e.ID, &e.HostID, &e.Type, &e.Detail, &at, &e.Subject, &e.Count, &last); err != nil {
			return nil, err
		}
		e.At, e.LastAt = fromMS(at), fromMS(last)
		out = append(out, e)
	}
	return out, rows.Err()
}
