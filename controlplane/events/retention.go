package events

import (
	"context"
	"log/slog"
	"time"
)

// Trimmer deletes events beyond the store's retention (see
// store.EventPolicy).
type Trimmer interface {
	TrimEvents(ctx context.Context, now time.Time) (int64, error)
}

// Retention trims the stored events in the background, every Every
// (default 1 minute), until ctx ends. Several replicas may run it on one
// store: a trim is idempotent.
type Retention struct {
	Store  Trimmer
	Every  time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Run trims once now, then every r.Every.
func (r Retention) Run(ctx context.Context) {
	if r.Every <= 0 {
		r.Every = time.Minute
	}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		n, err := r.Store.TrimEvents(ctx, r.Now())
		switch {
		case err != nil && ctx.Err() == nil:
			r.Logger.Warn("trim events failed; retrying", "err", err)
		case n > 0:
			r.Logger.Info("trimmed events", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
