package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

// TestFleetOps runs the rollout, event feed and webhook storage suite on
// SQLite and PostgreSQL.
func TestFleetOps(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		fleetOpsSuite(t, func(t *testing.T) string { return "sqlite://" + filepath.Join(t.TempDir(), "cp.db") })
	})
	t.Run("postgres", func(t *testing.T) {
		c := pgtest.Start(t)
		fleetOpsSuite(t, func(t *testing.T) string {
			dsn, err := c.NewDatabase(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return dsn
		})
	})
}

func fleetOpsSuite(t *testing.T, newDSN func(t *testing.T) string) {
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	t.Cleanup(cancel)

	t.Run("rollouts persist and the latest per channel wins", func(t *testing.T) {
		dsn := newDSN(t)
		s := openDSN(t, dsn)
		a, err := s.SaveRollout(ctx, store.RolloutRecord{Channel: "stable", State: "rolling", Doc: `{"a":1}`, CreatedAt: t0, UpdatedAt: t0})
		if err != nil || a.ID == 0 {
			t.Fatalf("insert rollout: id %d, err %v", a.ID, err)
		}
		b, err := s.SaveRollout(ctx, store.RolloutRecord{Channel: "stable", State: "rolling", Doc: `{"b":1}`, CreatedAt: t0, UpdatedAt: t0})
		if err != nil || b.ID <= a.ID {
			t.Fatalf("second rollout: id %d (first %d), err %v", b.ID, a.ID, err)
		}
		if _, err := s.SaveRollout(ctx, store.RolloutRecord{Channel: "staging", State: "completed", Doc: `{}`, CreatedAt: t0, UpdatedAt: t0}); err != nil {
			t.Fatal(err)
		}
		stale := b
		b.State, b.Doc, b.UpdatedAt = "halted", `{"b":2}`, t0.Add(time.Minute)
		if b, err = s.SaveRollout(ctx, b); err != nil || b.Version != 2 {
			t.Fatalf("update rollout: version %d, %v; want 2", b.Version, err)
		}
		stale.State = "paused"
		if _, err := s.SaveRollout(ctx, stale); !errors.Is(err, store.ErrStale) {
			t.Errorf("update from a stale read: %v, want ErrStale", err)
		}
		if _, err := s.SaveRollout(ctx, store.RolloutRecord{ID: 9999, Channel: "x", State: "halted"}); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("updating a missing rollout: %v, want ErrNotFound", err)
		}
		_ = s.Close()
		got, err := openDSN(t, dsn).LatestRollouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("latest rollouts = %d, want 2 (one per channel): %+v", len(got), got)
		}
		if got[0].Channel != "stable" || got[0].ID != b.ID || got[0].State != "halted" || got[0].Doc != `{"b":2}` ||
			!got[0].UpdatedAt.Equal(t0.Add(time.Minute)) || got[0].Version != 2 {
			t.Errorf("stable rollout = %+v, want id %d halted with the updated doc", got[0], b.ID)
		}
	})

	t.Run("events since pages in order", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		var evs []store.Event
		for i := range 5 {
			evs = append(evs, store.Event{HostID: "h1", Type: "online", Detail: string(rune('a' + i)), At: t0})
		}
		if err := s.Flush(ctx, nil, evs); err != nil {
			t.Fatal(err)
		}
		p1, err := s.EventsSince(ctx, 0, 3)
		if err != nil || len(p1) != 3 || p1[0].Detail != "a" || p1[2].Detail != "c" {
			t.Fatalf("first page = %+v, %v; want a, b, c", p1, err)
		}
		p2, err := s.EventsSince(ctx, p1[2].ID, 3)
		if err != nil || len(p2) != 2 || p2[0].Detail != "d" || p2[1].Detail != "e" {
			t.Fatalf("second page = %+v, %v; want d, e", p2, err)
		}
		p3, err := s.EventsSince(ctx, p2[1].ID, 3)
		if err != nil || len(p3) != 0 {
			t.Fatalf("past the end = %+v, %v; want none", p3, err)
		}
	})

	t.Run("deliveries and cursors", func(t *testing.T) {
		s := openDSN(t, newDSN(t))
		if c, err := s.WebhookCursor(ctx, "ops"); err != nil || c != 0 {
			t.Fatalf("fresh cursor = %d, %v; want 0", c, err)
		}
		for _, c := range []int64{4, 7} {
			if err := s.SetWebhookCursor(ctx, "ops", c); err != nil {
				t.Fatal(err)
			}
		}
		if c, err := s.WebhookCursor(ctx, "ops"); err != nil || c != 7 {
			t.Errorf("cursor = %d, %v; want 7", c, err)
		}
		for i, code := range []int{500, 200} {
			if err := s.RecordDelivery(ctx, store.Delivery{Hook: "ops", EventID: 7, Attempt: i + 1, StatusCode: code, At: t0}); err != nil {
				t.Fatal(err)
			}
		}
		ds, err := s.Deliveries(ctx, 7)
		if err != nil || len(ds) != 2 || ds[0].StatusCode != 500 || ds[1].Attempt != 2 {
			t.Errorf("deliveries = %+v, %v; want attempt 1 (500) then 2", ds, err)
		}
	})
}
