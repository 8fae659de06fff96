package rollout

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type events struct {
	mu  sync.Mutex
	evs []store.Event
}

func (e *events) emit(evs ...store.Event) { e.mu.Lock(); e.evs = append(e.evs, evs...); e.mu.Unlock() }
func (e *events) types() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.evs {
		out = append(out, ev.Type)
	}
	return out
}

func newManager(t *testing.T, st store.Store, clk *clock, evs *events) *Manager {
	t.Helper()
	m, err := New(context.Background(), Options{
		Store: st, Now: clk.now, Emit: evs.emit,
		Hosts:    func(context.Context, string) ([]string, error) { return []string{"h1", "h2", "h3"}, nil },
		Defaults: Policy{BakeMS: 1000, WaveTimeoutMS: 5000},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestManager(t *testing.T) {
	ctx := context.Background()
	dsn := "sqlite://" + filepath.Join(t.TempDir(), "cp.db")
	st, err := store.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if _, err := st.SetChannelImages(ctx, "stable", map[string]string{"platform": imgOld, "redis": imgOld}); err != nil {
		t.Fatal(err)
	}
	clk, evs := &clock{t: t0}, &events{}
	m := newManager(t, st, clk, evs)

	if _, err := m.Start(ctx, "stable", Request{Images: map[string]string{"platform": "repo:tag"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("start with a tag: %v, want ErrInvalid", err)
	}
	r, err := m.Start(ctx, "stable", Request{Images: map[string]string{"platform": imgNew}})
	if err != nil {
		t.Fatal(err)
	}
	if r.To["redis"] != imgOld || r.To["platform"] != imgNew || r.FromRevision != 1 || r.Revision != 2 || len(r.Waves) != 3 {
		t.Fatalf("rollout = %+v, want platform new, redis kept, revisions 1 -> 2, 3 waves", r)
	}
	for _, tc := range []struct {
		host string
		want string
	}{{"h1", imgNew}, {"h2", imgOld}} {
		if _, ds, ok := m.Desired("stable", tc.host, 2); !ok || ds.Images["platform"] != tc.want {
			t.Errorf("desired of %s = %v (ok %v), want platform %s", tc.host, ds.Images, ok, tc.want)
		}
	}
	if _, _, ok := m.Desired("stable", "h1", 7); ok {
		t.Error("a channel revision not from the rollout was answered by it")
	}
	if _, err := m.Pause(ctx, "stable", "looking"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Pause(ctx, "stable", "again"); !errors.Is(err, ErrState) {
		t.Errorf("pausing a paused rollout: %v, want ErrState", err)
	}
	// Paused: ready hosts don't move it.
	m.Observe("h1", &api.HeartbeatRequest{Units: []api.UnitStatus{{Name: "platform", State: api.UnitReady, Image: imgNew}}})
	clk.add(time.Minute)
	m.Tick(ctx)
	if got, _ := m.Get("stable"); got.Current != 0 {
		t.Fatalf("paused rollout moved to wave %d", got.Current)
	}
	if _, err := m.Resume(ctx, "stable"); err != nil {
		t.Fatal(err)
	}
	m.Tick(ctx)
	clk.add(2 * time.Second)
	m.Tick(ctx)
	if got, _ := m.Get("stable"); got.Current != 1 {
		t.Fatalf("after the canary baked: wave %d, want 1", got.Current)
	}
	// h2 never becomes ready: the wave times out and the rollout halts.
	clk.add(6 * time.Second)
	m.Tick(ctx)
	got, _ := m.Get("stable")
	if got.State != StateHalted {
		t.Fatalf("state %s, want halted", got.State)
	}
	// The state survives a restart.
	m2 := newManager(t, st, clk, &events{})
	if got2, err := m2.Get("stable"); err != nil || got2.State != StateHalted || got2.Current != 1 || got2.Waves[0].DoneAt.IsZero() {
		t.Fatalf("reloaded = %+v, %v; want halted at wave 1", got2, err)
	}
	rb, err := m2.Rollback(ctx, "stable", "bad build")
	if err != nil {
		t.Fatal(err)
	}
	if _, ds, ok := m2.Desired("stable", "h1", rb.RollbackRevision); !ok || ds.Images["platform"] != imgOld || ds.Revision != 3 {
		t.Errorf("after rollback desired of h1 = %+v, want the old image at revision 3", ds)
	}
	if _, err := m2.Rollback(ctx, "stable", "again"); !errors.Is(err, ErrState) {
		t.Errorf("second rollback: %v, want ErrState", err)
	}
	if _, err := m2.Pause(ctx, "nope", ""); !errors.Is(err, ErrNoRollout) {
		t.Errorf("pause without a rollout: %v, want ErrNoRollout", err)
	}
	// Another replica on the same store sees the rollback after a reload.
	other := m
	if _, err := m2.Resume(ctx, "stable"); !errors.Is(err, ErrState) {
		t.Errorf("resume after rollback: %v, want ErrState", err)
	}
	if err := other.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := other.Get("stable"); got.State != StateRolledBack || other.Active() {
		t.Errorf("reloaded state %s (active %v), want rolled_back", got.State, other.Active())
	}
	// Two replicas: a change made on one is not overwritten by the other's
	// stale copy; the stale one reloads and the retry applies.
	r3, err := m.Start(ctx, "stable", Request{Images: map[string]string{"platform": imgNew}})
	if err != nil {
		t.Fatal(err)
	}
	stale := newManager(t, st, clk, &events{})
	if _, err := m.Pause(ctx, "stable", "from replica one"); err != nil {
		t.Fatal(err)
	}
	if _, err := stale.Rollback(ctx, "stable", "from replica two"); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "another replica") {
		t.Fatalf("change from a stale copy: %v, want ErrState naming another replica", err)
	}
	if got, _ := stale.Get("stable"); got.State != StatePaused || got.ID != r3.ID {
		t.Fatalf("stale copy after the conflict: %s, want it reloaded as paused", got.State)
	}
	if _, err := stale.Rollback(ctx, "stable", "retry"); err != nil {
		t.Fatalf("retry after reload: %v", err)
	}
	want := []string{"rollout_started", "rollout_halted"}
	if got := evs.types(); len(got) < 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("events = %v, want %v", got, want)
	}
}
