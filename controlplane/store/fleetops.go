package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrStale: the record changed since it was read (another replica wrote
// it); read it again and retry.
var ErrStale = errors.New("stored record changed since it was read")

// RolloutRecord is one staged rollout of a channel. Doc is the rollout's
// state as the rollout package encodes it (JSON); the store only keeps it.
// Version counts its writes, for optimistic concurrency.
type RolloutRecord struct {
	ID                   int64
	Channel, State, Doc  string
	Version              int64
	CreatedAt, UpdatedAt time.Time
}

// Delivery is one attempt to deliver an event to a webhook.
type Delivery struct {
	ID         int64
	Hook       string
	EventID    int64
	Attempt    int
	StatusCode int
	Error      string
	At         time.Time
}

// FleetOps is the part of the store used by rollouts, the event feed and
// webhooks.
type FleetOps interface {
	// SaveRollout inserts r when r.ID is 0 (returning it with its new ID and
	// version 1) or replaces the stored rollout with that ID when its version
	// is still r.Version (returning the next version), else ErrStale.
	SaveRollout(ctx context.Context, r RolloutRecord) (RolloutRecord, error)
	// LatestRollouts returns the newest rollout of every channel.
	LatestRollouts(ctx context.Context) ([]RolloutRecord, error)
	// EventsSince returns up to limit events with an ID above since, oldest
	// first.
	EventsSince(ctx context.Context, since int64, limit int) ([]Event, error)
	// RecordDelivery records one webhook delivery attempt.
	RecordDelivery(ctx context.Context, d Delivery) error
	// Deliveries lists the attempts recorded for an event, oldest first.
	Deliveries(ctx context.Context, eventID int64) ([]Delivery, error)
	// WebhookCursor is the last event ID a hook is done with (0 if none).
	WebhookCursor(ctx context.Context, hook string) (int64, error)
	// SetWebhookCursor records the last event ID a hook is done with.
	SetWebhookCursor(ctx context.Context, hook string, eventID int64) error
}

func (s *sqlStore) SaveRollout(ctx context.Context, r RolloutRecord) (RolloutRecord, error) {
	err := s.write(ctx, func(tx *sql.Tx) error {
		if r.ID == 0 {
			r.Version = 1
			err := tx.QueryRowContext(ctx, s.q(`INSERT INTO rollouts (channel, state, doc, version, created_at, updated_at)
				VALUES (?, ?, ?, 1, ?, ?) RETURNING id`), r.Channel, r.State, r.Doc, ms(r.CreatedAt), ms(r.UpdatedAt)).Scan(&r.ID)
			if err != nil {
				return fmt.Errorf("insert rollout of channel %s: %w", r.Channel, err)
			}
			return nil
		}
		res, err := tx.ExecContext(ctx, s.q(`UPDATE rollouts SET state = ?, doc = ?, updated_at = ?, version = version + 1
			WHERE id = ? AND version = ?`), r.State, r.Doc, ms(r.UpdatedAt), r.ID, r.Version)
		if err != nil {
			return fmt.Errorf("update rollout %d: %w", r.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			var one int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM rollouts WHERE id = ?`), r.ID).Scan(&one); errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("update rollout %d: %w", r.ID, ErrNotFound)
			}
			return fmt.Errorf("update rollout %d at version %d: %w", r.ID, r.Version, ErrStale)
		}
		r.Version++
		return nil
	})
	return r, err
}

func (s *sqlStore) LatestRollouts(ctx context.Context) ([]RolloutRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, channel, state, doc, version, created_at, updated_at FROM rollouts
		WHERE id IN (SELECT MAX(id) FROM rollouts GROUP BY channel) ORDER BY channel`)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer func() { _ = rows.Close() }()
	var out []RolloutRecord
	for rows.Next() {
		var r RolloutRecord
		var c, u int64
		if err := rows.Scan(&r.ID, &r.Channel, &r.State, &r.Doc, &r.Version, &c, &u); err != nil {
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		r.CreatedAt, r.UpdatedAt = fromMS(c), fromMS(u)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

func (s *sqlStore) EventsSince(ctx context.Context, since int64, limit int) ([]Event, error) {
	if limit <= 0 || limit > 10000 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT `+eventCols+` FROM events WHERE id > ? ORDER BY id LIMIT ?`), since, limit)
	if err != nil {
		return nil, fmt.Errorf("list events since %d: %w", since, err)
	}
	out, err := scanEvents(rows)
	if err != nil {
		return nil, fmt.Errorf("list events since %d: %w", since, err)
	}
	if out == nil {
		out = []Event{}
	}
	return out, nil
}

func (s *sqlStore) RecordDelivery(ctx context.Context, d Delivery) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO webhook_deliveries (hook, event_id, attempt, status_code, error, at)
			VALUES (?, ?, ?, ?, ?, ?)`), d.Hook, d.EventID, d.Attempt, d.StatusCode, d.Error, ms(d.At))
		if err != nil {
			return fmt.Errorf("record delivery of event %d to %s: %w", d.EventID, d.Hook, err)
		}
		return nil
	})
}

func (s *sqlStore) Deliveries(ctx context.Context, eventID int64) ([]Delivery, error) {
	rows, err := s.db.QueryContext(ctx, s.q(`SELECT id, hook, event_id, attempt, status_code, error, at
		FROM webhook_deliveries WHERE event_id = ? ORDER BY id`), eventID)
	if err != nil {
		return nil, fmt.Errorf("list deliveries of event %d: %w", eventID, err)
	}
	defer func() { _ = rows.Close() }()
	var out []Delivery
	for rows.Next() {
		var d Delivery
		var at int64
		if err := rows.Scan(&d.ID, &d.Hook, &d.EventID, &d.Attempt, &d.StatusCode, &d.Error, &at); err != nil {
			return nil, fmt.Errorf("list deliveries of event %d: %w", eventID, err)
		}
		d.At = fromMS(at)
		out = append(out, d)
	}
	return out, rows.Err()
}

func (s *sqlStore) WebhookCursor(ctx context.Context, hook string) (int64, error) {
	var id int64
	err := s.db.QueryRowContext(ctx, s.q(`SELECT last_event_id FROM webhook_cursors WHERE hook = ?`), hook).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read webhook cursor of %s: %w", hook, err)
	}
	return id, nil
}

func (s *sqlStore) SetWebhookCursor(ctx context.Context, hook string, eventID int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO webhook_cursors (hook, last_event_id) VALUES (?, ?)
			ON CONFLICT (hook) DO UPDATE SET last_event_id = excluded.last_event_id`), hook, eventID)
		if err != nil {
			return fmt.Errorf("save webhook cursor of %s: %w", hook, err)
		}
		return nil
	})
}
