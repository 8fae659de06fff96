//go:build unix

// Package heartbeat is the agent's side of the control plane: it registers the
// host (with a proof the caller supplies), keeps the host ID and token in a
// 0600 file under the state dir, and heartbeats at the server's interval
// with jitter. When the control plane is down it backs off (jittered, capped
// at about a minute) and recovers by itself; it never stops units except
// through OnGone, on 410.
package heartbeat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// Config configures the loop. Client, StateDir, Proof, Snapshot and
// Register.BootID are required.
type Config struct {
	Client *api.Client
	// URL identifies the control plane in the state file: a saved
	// registration for another URL is ignored.
	URL      string
	StateDir string
	// Proof returns the identity proof when the host (re-)registers: the
	// IMDS PKCS#7 from agent/identity, or an enrollment token.
	Proof func(ctx context.Context) (api.Proof, error)
	// Register carries the claims: role, org, workspace, agent version,
	// boot ID, hostname.
	Register api.RegisterRequest
	// Snapshot returns the current state of the units for a heartbeat.
	Snapshot func() api.HeartbeatRequest
	// OnReply, if set, receives every heartbeat reply (desired state). It
	// runs on the loop's goroutine and must not block.
	OnReply func(api.HeartbeatResponse)
	// OnGone is called once when the control plane says the host was
	// deprovisioned (410); the caller stops its units. The loop then idles
	// until its context ends. No other error ever stops units.
	OnGone func()
	// OnStatus, if set, receives the loop's status after every change (the
	// daemon's boot waits on the first registration outcome). It must not
	// block.
	OnStatus func(Status)
	Logger   *slog.Logger
	// MinBackoff and MaxBackoff bound the retry delay while the control
	// plane is unreachable (defaults: api.AgentRetry.Loop, 1s and 1m).
	MinBackoff, MaxBackoff time.Duration
}

// Status is the loop's state, for the agent's status API.
type Status struct {
	HostID     string
	Registered bool
	Gone       bool
	LastBeat   time.Time
	LastError  string
	Failures   int
	Interval   time.Duration
}

// Loop is the registration and heartbeat loop.
type Loop struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status Status
}

// New checks cfg and returns a loop; Run starts it.
func New(cfg Config) (*Loop, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("fleet: no control-plane client")
	case cfg.StateDir == "":
		return nil, errors.New("state_dir: required for the control-plane registration")
	case cfg.Proof == nil:
		return nil, errors.New("fleet: no identity proof source")
	case cfg.Snapshot == nil:
		return nil, errors.New("fleet: no unit snapshot source")
	case cfg.Register.BootID == "":
		return nil, errors.New("fleet: boot ID is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = api.AgentRetry.Loop.Min
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = api.AgentRetry.Loop.Max
	}
	return &Loop{cfg: cfg, log: cfg.Logger}, nil
}

// Status returns a copy of the loop's state.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *Loop) update(fn func(*Status)) {
	l.mu.Lock()
	fn(&l.status)
	st := l.status
	l.mu.Unlock()
	if l.cfg.OnStatus != nil {
		l.cfg.OnStatus(st)
	}
}

// backoff is the retry delay's policy: capped at the heartbeat interval
// once the server has given one, since a host that retried less often than
// it beats would be judged offline after a control-plane outage longer than
// its offline window.
func (l *Loop) backoff(interval time.Duration) backoff.Policy {
	return backoff.Policy{Min: l.cfg.MinBackoff, Max: l.cfg.MaxBackoff}.CappedAt(interval)
}

// Run registers and heartbeats until ctx ends; it returns nil then. Errors
// from the control plane never end it.
func (l *Loop) Run(ctx context.Context) error {
	st, tok, err := loadState(l.cfg.StateDir)
	if err != nil {
		l.log.Warn("ignoring saved registration", "err", err)
		st, tok = state{}, secretstore.Secret{}
	}
	if st.URL != l.cfg.URL {
		st, tok = state{}, secretstore.Secret{}
	}
	var (
		interval time.Duration
		wait     time.Duration
		failures int
	)
	if st.HostID != "" && st.BootID == l.cfg.Register.BootID {
		l.log.Info("using saved registration", "host", st.HostID)
		l.update(func(s *Status) { s.HostID, s.Registered = st.HostID, true })
	}
	for {
		if wait > 0 && !backoff.Wait(ctx, wait) {
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		var retryAfter time.Duration
		if st.HostID == "" || st.BootID != l.cfg.Register.BootID {
			reg, err := l.register(ctx, tok)
			if err == nil {
				st = state{URL: l.cfg.URL, HostID: reg.HostID, BootID: l.cfg.Register.BootID}
				tok, interval, failures = reg.HostToken, reg.Interval, 0
				if err := saveState(l.cfg.StateDir, st, tok); err != nil {
					// Keep running on the in-memory registration; a restart
					// will register again with the same boot.
					l.log.Error("could not save the registration; will register again after a restart", "err", err)
				}
				l.update(func(s *Status) { s.HostID, s.Registered, s.Interval = reg.HostID, true, reg.Interval })
				l.log.Info("registered with the control plane", "host", reg.HostID, "interval", reg.Interval)
				// Stagger the first beat over one interval.
				wait = rand.N(max(interval, time.Millisecond))
				continue
			}
			if l.gone(ctx, err) {
				return nil
			}
			retryAfter = l.failed(err, "register", &failures)
			wait = l.backoff(interval).Delay(failures, retryAfter)
			continue
		}
		resp, err := l.cfg.Client.Heartbeat(ctx, st.HostID, tok, l.cfg.Snapshot())
		switch {
		case err == nil:
			failures = 0
			interval = max(resp.Interval(), 100*time.Millisecond)
			l.update(func(s *Status) { s.LastBeat, s.LastError, s.Failures, s.Interval = time.Now(), "", 0, interval })
			if l.cfg.OnReply != nil {
				l.cfg.OnReply(resp)
			}
			wait = backoff.Spread(interval, 0.1)
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, api.ErrUnauthorized):
			// Our token is stale: register again (same boot, so the server
			// lets us) and carry on.
			l.log.Warn("control plane does not know our token; registering again", "host", st.HostID)
			st.HostID, tok, wait = "", secretstore.Secret{}, 0
			l.update(func(s *Status) { s.Registered = false })
		case l.gone(ctx, err):
			return nil
		default:
			retryAfter = l.failed(err, "heartbeat", &failures)
			wait = l.backoff(interval).Delay(failures, retryAfter)
		}
	}
}

func (l *Loop) register(ctx context.Context, current secretstore.Secret) (api.Registration, error) {
	proof, err := l.cfg.Proof(ctx)
	if err != nil {
		return api.Registration{}, fmt.Errorf("identity proof: %w", err)
	}
	return l.cfg.Client.Register(ctx, proof, current, l.cfg.Register)
}

// gone handles 410: call OnGone once and idle until ctx ends.
func (l *Loop) gone(ctx context.Context, err error) bool {
	if !errors.Is(err, api.ErrGone) {
		return false
	}
	l.log.Warn("control plane says this host was deprovisioned; stopping units and staying idle")
	l.update(func(s *Status) { s.Gone, s.Registered, s.LastError = true, false, err.Error() })
	if l.cfg.OnGone != nil {
		l.cfg.OnGone()
	}
	<-ctx.Done()
	return true
}

// failed records a failure and returns the server's Retry-After, if any.
func (l *Loop) failed(err error, op string, failures *int) time.Duration {
	*failures++
	n := *failures
	l.update(func(s *Status) { s.LastError, s.Failures = err.Error(), n })
	if n == 1 || n%10 == 0 {
		l.log.Warn("control plane unreachable; units keep running, retrying with backoff", "op", op, "failures", n, "err", err)
	}
	var se *api.StatusError
	if errors.As(err, &se) {
		if se.Code == 409 {
			l.log.Error("control plane refuses this boot: the instance is registered by another boot and our token is gone; deprovision the host or restore the state dir", "err", err)
		}
		return se.RetryAfter
	}
	return 0
}
