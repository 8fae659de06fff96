package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// TestMassSilence: when most of the fleet goes quiet at once nobody is
// marked offline; a minority going quiet is marked offline as usual.
func TestMassSilence(t *testing.T) {
	tests := []struct {
		name        string
		hosts, quit int
		wantOffline int
	}{
		{"minority silent: marked offline", 20, 5, 5},
		{"majority silent: nobody marked offline", 20, 15, 0},
		{"below the minimum count: marked offline", 4, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			ctx := context.Background()
			regs := make([]api.Registration, tt.hosts)
			for i := range regs {
				regs[i] = f.enroll(fmt.Sprintf("m-%d", i))
			}
			// The server started before the hosts: let its restart window pass.
			f.clock.Add(5 * time.Second)
			beat := func(rs []api.Registration) {
				for _, r := range rs {
					if _, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("t")); err != nil {
						t.Fatal(err)
					}
				}
			}
			beat(regs)
			alive := regs[tt.quit:]
			// 1 s interval + 0.5 s grace: sweep every 500 ms for 6 s while
			// the live hosts beat every second.
			for i := range 12 {
				f.clock.Add(500 * time.Millisecond)
				if i%2 == 1 {
					beat(alive)
				}
				f.srv.lv.sweep(context.Background(), f.clock.Now())
			}
			offline := 0
			for _, r := range regs {
				if f.hostStatus(r.HostID) == api.StatusOffline {
					offline++
				}
			}
			if offline != tt.wantOffline {
				t.Errorf("%d of %d hosts offline after %d went silent, want %d", offline, tt.hosts, tt.quit, tt.wantOffline)
			}
			if got, want := f.srv.inMass.Load(), tt.wantOffline == 0; got != want {
				t.Errorf("mass silence = %v, want %v", got, want)
			}
			// The silent hosts return: the guard lifts, nobody is offline.
			beat(regs)
			f.srv.lv.sweep(context.Background(), f.clock.Now())
			if f.srv.inMass.Load() {
				t.Error("mass silence still held after every host returned")
			}
		})
	}
}

func TestShedAnswers429WithRetryAfter(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	r := f.enroll("m-shed")
	f.srv.shed.tokens = 0 // the budget is spent
	_, err := f.agent.Heartbeat(ctx, r.HostID, r.HostToken, report("t"))
	var se *api.StatusError
	if !errors.As(err, &se) || se.Code != 429 || se.RetryAfter < time.Second || se.RetryAfter > time.Second {
		t.Fatalf("heartbeat over budget = %v, want 429 with Retry-After 1s (one interval)", err)
	}
}

// TestRestartHold: after its start the server marks nobody offline for
// RestartHold, then judges silence as usual.
func TestRestartHold(t *testing.T) {
	f := newFixture(t)
	r := f.enroll("m-hold")
	f.srv.cfg.RestartHold = 10 * time.Second // agents may back off this long
	// The host was last heard before the server started (a restart).
	h := f.srv.hosts.get(r.HostID)
	h.mu.Lock()
	h.lastSeen = f.srv.started.Add(-time.Minute)
	h.mu.Unlock()
	tests := []struct {
		after time.Duration
		want  string
	}{
		{5 * time.Second, api.StatusOnline},   // past one window (1.5 s here), within the hold
		{9 * time.Second, api.StatusOnline},   // still within the hold
		{11 * time.Second, api.StatusOffline}, // the hold passed
	}
	for _, tt := range tests {
		f.srv.lv.sweep(context.Background(), f.srv.started.Add(tt.after))
		if got := f.hostStatus(r.HostID); got != tt.want {
			t.Errorf("%s after the start: host %s, want %s", tt.after, got, tt.want)
		}
	}
}

// TestEventsListedBeforeFlush: an offline event is listed as soon as the
// host shows offline, before the flush writes it.
func TestEventsListedBeforeFlush(t *testing.T) {
	f := newFixture(t)
	r := f.enroll("m-ev")
	f.srv.lv.sweep(context.Background(), f.srv.started.Add(time.Minute))
	if got := f.hostStatus(r.HostID); got != api.StatusOffline {
		t.Fatalf("host = %s, want offline", got)
	}
	evs, err := f.admin.Events(context.Background(), r.HostID)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Type != api.EventOffline {
		t.Fatalf("events = %+v, %v; want the unflushed offline event last", evs, err)
	}
}
