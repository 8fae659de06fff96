package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Bucket is one token bucket of a throttle: Burst tokens, refilled at
// PerMinute. A key never charged has a full bucket.
type Bucket struct {
	Key       string
	Burst     float64
	PerMinute float64
}

// Throttle keeps token buckets in the database, so every replica sees the
// same ones (the dashboard's login throttle, by source address and by
// account).
type Throttle interface {
	// Throttled reports how long until every bucket has a token (0: now).
	// It only reads.
	Throttled(ctx context.Context, buckets []Bucket, now time.Time) (time.Duration, error)
	// Charge takes a token from every bucket, in one transaction, and
	// forgets buckets untouched for a day (full again by then).
	Charge(ctx context.Context, buckets []Bucket, now time.Time) error
}

func (s *sqlStore) Throttled(ctx context.Context, buckets []Bucket, now time.Time) (time.Duration, error) {
	var wait time.Duration
	for _, b := range buckets {
		var tokens float64
		var at int64
		err := s.db.QueryRowContext(ctx, s.q(`SELECT tokens, updated_at FROM throttles WHERE key = ?`), b.Key).Scan(&tokens, &at)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read throttle: %w", err)
		}
		tokens = min(b.Burst, tokens+now.Sub(fromMS(at)).Minutes()*b.PerMinute)
		if tokens < 1 {
			wait = max(wait, time.Duration((1-tokens)/b.PerMinute*float64(time.Minute)))
		}
	}
	return wait, nil
}

func (s *sqlStore) Charge(ctx context.Context, buckets []Bucket, now time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, b := range buckets {
			// refilled = tokens + minutes since the last charge × rate, at most burst
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO throttles (key, tokens, updated_at) VALUES (?, ?, ?)
				ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at, tokens = CASE
					WHEN throttles.tokens + (excluded.updated_at - throttles.updated_at) / 60000.0 * ? > ? THEN ?
					ELSE throttles.tokens + (excluded.updated_at - throttles.updated_at) / 60000.0 * ? END - 1`),
				b.Key, b.Burst-1, ms(now), b.PerMinute, b.Burst, b.Burst, b.PerMinute); err != nil {
				return fmt.Errorf("charge throttle: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM throttles WHERE updated_at < ?`), ms(now.Add(-24*time.Hour))); err != nil {
			return fmt.Errorf("forget old throttles: %w", err)
		}
		return nil
	})
}
