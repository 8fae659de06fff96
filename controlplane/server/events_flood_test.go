package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// TestEventFloodStaysInBudget is issue 15's finding 3: one host produced
// 2,304 unit_failed events (6.6 MB) in 26 s, never trimmed. Here one host
// floods 2,400 failures in 24 s of its clock, first of one unit flapping
// (the repeats coalesce into one event with a count), then of 2,400
// different units (the host's budget drops what is over it, counted in one
// events_suppressed event). The rows and bytes stay within the documented
// budget (store.EventPolicy), and the trimmer enforces the row cap and age.
func TestEventFloodStaysInBudget(t *testing.T) {
	backends(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		c := startCP(t, dsn)
		r, err := c.enroll(c.token(t, api.EnrollmentTokenRequest{Org: "acme", Role: "tenant"}), "m-flood", "boot-1", secret.Secret{})
		if err != nil {
			t.Fatal(err)
		}
		long := strings.Repeat("x", api.MaxDetailBytes)
		beat := func(units ...api.UnitStatus) {
			t.Helper()
			c.clock.Add(10 * time.Millisecond)
			if _, err := c.agent.Heartbeat(ctx, r.HostID, r.HostToken, api.HeartbeatRequest{BootID: "boot-1", Units: units}); err != nil {
				t.Fatal(err)
			}
		}
		const flood = 2400
		policy := c.st.EventPolicy()
		for _, tt := range []struct {
			name     string
			unit     func(i int) api.UnitStatus
			maxRows  int
			wantKind string
		}{
			{"one unit flapping", func(i int) api.UnitStatus {
				state := api.UnitFailed
				if i%2 == 1 {
					state = api.UnitStarting
				}
				return api.UnitStatus{Name: "platform", State: state, Restarts: i, Detail: long}
			}, 1, events.KindUnitFailed},
			{"a new unit failing each time", func(i int) api.UnitStatus {
				return api.UnitStatus{Name: fmt.Sprintf("unit-%d", i), State: api.UnitFailed, Detail: long}
			}, policy.HostBudget + 1, events.KindEventsSuppressed},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, before := countRows(t, c.st)
				beat() // a baseline report
				for i := range flood {
					beat(tt.unit(i))
					if i%200 == 199 {
						if err := c.srv.flush(ctx, c.srv.store.Flush); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := c.srv.flush(ctx, c.srv.store.Flush); err != nil {
					t.Fatal(err)
				}
				evs, err := c.st.Events(ctx, r.HostID, 10000)
				if err != nil {
					t.Fatal(err)
				}
				_, after := countRows(t, c.st)
				rows, bytes, counted := after-before, 0, int64(0)
				for _, e := range evs[len(evs)-rows:] {
					bytes += len(e.Detail) + len(e.Type) + len(e.Subject) + len(e.HostID)
					if e.Type == tt.wantKind {
						counted += e.Count
					}
				}
				if rows > tt.maxRows {
					t.Errorf("%d failures made %d event rows, want at most %d", flood, rows, tt.maxRows)
				}
				if limit := rows * (store.MaxEventDetail + 300); bytes > limit {
					t.Errorf("events hold %d bytes, over the budget of %d", bytes, limit)
				}
				if counted == 0 {
					t.Errorf("no %s event counts the flood", tt.wantKind)
				}
				t.Logf("%d failures: %d rows, %d bytes, %d counted in %s", flood, rows, bytes, counted, tt.wantKind)
			})
		}

		// Retention: the row cap, then the age.
		c.st.SetEventPolicy(store.EventPolicy{MaxRows: 5, MaxAge: 24 * time.Hour})
		if _, err := c.st.TrimEvents(ctx, c.clock.Now()); err != nil {
			t.Fatal(err)
		}
		if _, n := countRows(t, c.st); n != 5 {
			t.Errorf("%d events after trimming to 5 rows", n)
		}
		if _, err := c.st.TrimEvents(ctx, c.clock.Now().Add(25*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, n := countRows(t, c.st); n != 0 {
			t.Errorf("%d events left older than the maximum age", n)
		}
	})
}

// TestPendingEventsBounded: while storage fails, the events waiting for a
// flush stay under maxPending.
func TestPendingEventsBounded(t *testing.T) {
	f := newFixture(t)
	evs := make([]store.Event, 1000)
	for range maxPending/len(evs) + 5 {
		f.srv.addEvents(evs...)
	}
	if n := len(f.srv.pendingEvents("")); n != maxPending {
		t.Errorf("%d events pending, want the cap %d", n, maxPending)
	}
}
