//go:build unix

package secretstore

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// Store defaults.
const (
	DefaultRefresh        = 5 * time.Minute
	DefaultJitter         = 0.2
	DefaultBootBackoff    = time.Second
	DefaultMaxBootBackoff = time.Minute
)

// StoreOptions configure a Store. Zero values take the defaults.
type StoreOptions struct {
	// Refresh is the mean time between refreshes (default 5m).
	Refresh time.Duration
	// Jitter spreads each refresh by ±Jitter×Refresh (default 0.2; negative for none).
	Jitter float64
	// BootBackoff is the first wait after a transient failure before any
	// fetch has succeeded (default 1s); the wait's ceiling doubles up to
	// MaxBootBackoff (default 1m), with jitter (backoff.Policy).
	BootBackoff    time.Duration
	MaxBootBackoff time.Duration
	// OnChange is called from Run's goroutine, after a refresh, with the
	// sorted names whose value appeared, changed or disappeared; unchanged
	// values call nothing. It should hand off quickly (e.g. send on a
	// channel): the next refresh waits for it.
	OnChange func(changed []string)
	// Logger receives one line per boot backoff step and per failed refresh.
	Logger *slog.Logger
	// OnValues, when set, is given every value of each successful fetch
	// before any of them is handed out (for the agent-wide redactor). It
	// must return quickly.
	OnValues func(values []string)
}

// Status is the store's state for the status API. It never holds values.
type Status struct {
	Source      string    `json:"source"`
	Loaded      bool      `json:"loaded"`
	Count       int       `json:"count"`
	Names       []string  `json:"names,omitempty"`
	LastRefresh time.Time `json:"last_refresh,omitzero"` // last successful fetch
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"` // empty after a success
}

// Store holds the last good secrets of a Source and refreshes them.
type Store struct {
	src  Source
	opts StoreOptions
	log  *slog.Logger

	fetchMu sync.Mutex // serialises fetches

	mu          sync.RWMutex
	values      map[string]Secret
	loaded      bool
	lastRefresh time.Time
	lastAttempt time.Time
	lastErr     error
}

// NewStore returns a store over src. Nothing is fetched until Load, Refresh or Run.
func NewStore(src Source, o StoreOptions) *Store {
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	switch {
	case o.Jitter == 0:
		o.Jitter = DefaultJitter
	case o.Jitter < 0:
		o.Jitter = 0
	case o.Jitter > 1:
		o.Jitter = 1
	}
	if o.BootBackoff <= 0 {
		o.BootBackoff = DefaultBootBackoff
	}
	if o.MaxBootBackoff < o.BootBackoff {
		o.MaxBootBackoff = max(DefaultMaxBootBackoff, o.BootBackoff)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{src: src, opts: o, log: log.With("secrets", src.Location())}
}

// Get returns the last good value of name.
func (s *Store) Get(name string) (Secret, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.values[name]
	return v, ok
}

// Resolve turns an env value or file content into what the unit receives:
// a "secret:<name>" reference becomes the secret (or a *MissingError naming
// the parameter and location), anything else passes through as a literal.
func (s *Store) Resolve(v string) (Secret, error) {
	name, ok, err := ParseRef(v)
	if err != nil {
		return Secret{}, err
	}
	if !ok {
		return New(v), nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if val, found := s.values[name]; found {
		return val, nil
	}
	me := &MissingError{Name: name, Location: s.src.Location()}
	if !s.loaded {
		me.Cause = s.lastErr
		if me.Cause == nil {
			me.Cause = fmt.Errorf("secrets from %s not fetched yet", me.Location)
		}
	}
	return Secret{}, me
}

// Status returns the store's state.
func (s *Store) Status() Status {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Status{
		Source: s.src.Location(), Loaded: s.loaded, Count: len(s.values),
		LastRefresh: s.lastRefresh, LastAttempt: s.lastAttempt,
	}
	for n := range s.values {
		st.Names = append(st.Names, n)
	}
	slices.Sort(st.Names)
	if s.lastErr != nil {
		st.LastError = s.lastErr.Error()
	}
	return st
}

// Refresh fetches once. On success it replaces the values and returns the
// names that changed (to its caller only: OnChange is Run's); on failure it
// keeps the last good values and records the error for Status.
func (s *Store) Refresh(ctx context.Context) ([]string, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	vals, err := s.src.Fetch(ctx)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		// Abandoned by the caller (shutdown), not failed: the status keeps
		// what the last real attempt found.
		return nil, err
	}
	s.lastAttempt = now
	if err != nil {
		s.lastErr = err
		return nil, err
	}
	if s.opts.OnValues != nil {
		all := make([]string, 0, len(vals))
		for _, v := range vals {
			all = append(all, v.Reveal())
		}
		s.opts.OnValues(all)
	}
	changed := diff(s.values, vals)
	s.values, s.loaded, s.lastRefresh, s.lastErr = vals, true, now, nil
	return changed, nil
}

// Load fetches until it succeeds, retrying transient failures (unreachable
// endpoint, throttling) with doubling backoff and one log line per step.
// It returns the first permanent failure (access denied, rejected
// credentials, no secrets) or ctx's error.
func (s *Store) Load(ctx context.Context) error {
	_, err := s.load(ctx)
	return err
}

func (s *Store) load(ctx context.Context) ([]string, error) {
	policy := backoff.Policy{Min: s.opts.BootBackoff, Max: s.opts.MaxBootBackoff}
	for attempt := 1; ; attempt++ {
		changed, err := s.Refresh(ctx)
		if err == nil || !Transient(err) {
			return changed, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := policy.Delay(attempt, 0)
		s.log.Warn("secrets fetch failed; retrying", "attempt", attempt, "retry_in", d.Round(time.Millisecond).String(), "error", err.Error())
		if !backoff.Wait(ctx, d) {
			return nil, ctx.Err()
		}
	}
}

// Run keeps the store fresh until ctx ends, then returns nil. Until a fetch
// has succeeded it loads like Load; after a permanent failure it tries again
// each refresh period. It then refreshes every Refresh±Jitter, keeping the
// last good values on failure, and calls OnChange with changed names
// (all names after the first successful load that Load did not do).
func (s *Store) Run(ctx context.Context) error {
	for {
		s.mu.RLock()
		loaded := s.loaded
		s.mu.RUnlock()
		if !loaded {
			changed, err := s.load(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				s.log.Error("secrets not loaded; retrying next refresh", "retry_in", s.opts.Refresh.String(), "error", err.Error())
			}
			s.notify(changed)
		}
		if !backoff.Wait(ctx, backoff.Spread(s.opts.Refresh, s.opts.Jitter)) {
			return nil
		}
		s.mu.RLock()
		loaded = s.loaded
		s.mu.RUnlock()
		if !loaded {
			continue
		}
		changed, err := s.Refresh(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			s.log.Warn("secrets refresh failed; keeping last good values", "error", err.Error())
			continue
		}
		s.notify(changed)
	}
}

func (s *Store) notify(changed []string) {
	if len(changed) == 0 {
		return
	}
	s.log.Info("secrets changed", "names", changed)
	if s.opts.OnChange != nil {
		s.opts.OnChange(changed)
	}
}

// diff returns the sorted names added, removed or changed between old and cur.
func diff(old, cur map[string]Secret) []string {
	var out []string
	for n, v := range cur {
		if o, ok := old[n]; !ok || !o.Equal(v) {
			out = append(out, n)
		}
	}
	for n := range old {
		if _, ok := cur[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
