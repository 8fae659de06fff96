package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// FleetConfig configures a simulated fleet.
type FleetConfig struct {
	URL        string
	AdminToken secret.Secret
	Hosts      int
	// Interval is the heartbeat interval; 0 takes the control plane's.
	Interval time.Duration
	// Retry is the agents' retry policy, within a call and between calls
	// (capped at the interval, as agent/heartbeat does). Zero: the shipped
	// agent's, api.AgentRetry, at the time scale of the interval
	// (api.RetryPolicy.For): exactly it at the default 10 s.
	Retry  api.RetryPolicy
	Logger *slog.Logger
}

// Fleet is a set of simulated agents registered with one control plane.
type Fleet struct {
	cfg      FleetConfig
	hc       *http.Client
	tr       *http.Transport
	agent    *api.Client
	admin    *api.Client
	hosts    []*host
	interval time.Duration
	retry    api.RetryPolicy
	rec      recorder

	// RegisterLatency holds one latency per successful registration.
	RegisterLatency []time.Duration
	// RegisterErrors counts hosts that could not register.
	RegisterErrors int

	mu sync.Mutex
	wg sync.WaitGroup
}

type host struct {
	i      int
	reg    api.Registration
	cancel context.CancelFunc
	done   chan struct{}
	lastOK atomic.Int64 // unix nanoseconds of the last answered heartbeat
}

// Enroll creates an enrollment token and registers cfg.Hosts simulated
// agents, 32 at a time, honouring Retry-After when the control plane sheds.
func Enroll(ctx context.Context, cfg FleetConfig) (*Fleet, error) {
	if cfg.Hosts <= 0 {
		return nil, errors.New("--hosts must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr := cleanhttp.DefaultPooledTransport()
	tr.MaxIdleConnsPerHost = 512
	tr.MaxIdleConns = 512
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	f := &Fleet{cfg: cfg, hc: hc, tr: tr}
	var err error
	if f.admin, err = api.New(api.Options{BaseURL: cfg.URL, AdminToken: cfg.AdminToken, HTTPClient: hc}); err != nil {
		return nil, err
	}
	// Registration: the shipped agent's client, at the configured
	// interval's scale until the control plane's is known.
	if err := f.newAgentClient(cfg.Interval); err != nil {
		return nil, err
	}
	// One token enrolls the whole simulated fleet: tokens are single use
	// unless asked otherwise.
	tok, err := f.admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "sim", Role: api.RoleWorkspace, Channel: "stable",
		Uses: int64(min(cfg.Hosts, api.MaxEnrollmentUses))})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("create enrollment token (is --admin-token right?): %w", err)
	}
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	f.register(ctx, secret.New(tok.Token), hex.EncodeToString(run))
	if len(f.hosts) == 0 {
		tr.CloseIdleConnections()
		return nil, errors.New("no simulated host could register")
	}
	f.interval = cfg.Interval
	if f.interval <= 0 {
		f.interval = f.hosts[0].reg.Interval
	}
	if err := f.newAgentClient(f.interval); err != nil {
		return nil, err
	}
	cfg.Logger.Info("registered", "hosts", len(f.hosts), "errors", f.RegisterErrors, "interval", f.interval)
	return f, nil
}

// newAgentClient makes the agents' client: the retry policy of cfg.Retry
// (default: the shipped agent's at the interval's scale), every heartbeat
// attempt recorded.
func (f *Fleet) newAgentClient(interval time.Duration) error {
	if f.cfg.Retry == (api.RetryPolicy{}) {
		f.retry = api.AgentRetry.For(interval)
	} else {
		f.retry = f.cfg.Retry
	}
	hc := &http.Client{Transport: &recording{next: f.tr, rec: &f.rec}, Timeout: f.hc.Timeout}
	c, err := api.New(f.retry.Apply(api.Options{BaseURL: f.cfg.URL, HTTPClient: hc}))
	if err != nil {
		return err
	}
	f.agent = c
	return nil
}

func (f *Fleet) register(ctx context.Context, tok secret.Secret, run string) {
	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, 32)
	)
	for i := range f.cfg.Hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			var (
				reg api.Registration
				err error
			)
			for attempt := 1; attempt <= 20 && ctx.Err() == nil; attempt++ {
				reg, err = f.agent.Register(ctx, api.Proof{EnrollmentToken: tok, MachineID: fmt.Sprintf("sim-%s-%d", run, i)}, secret.Secret{},
					api.RegisterRequest{AgentVersion: "sim", BootID: fmt.Sprintf("boot-%s-%d", run, i), Hostname: fmt.Sprintf("sim-%d", i)})
				var se *api.StatusError
				if !errors.As(err, &se) || se.Code != http.StatusTooManyRequests {
					break
				}
				if !backoff.Wait(ctx, se.RetryAfter) {
					break
				}
			}
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				f.RegisterErrors++
				return
			}
			f.hosts = append(f.hosts, &host{i: i, reg: reg})
			f.RegisterLatency = append(f.RegisterLatency, d)
		}()
	}
	wg.Wait()
}

// Hosts is the number of registered simulated hosts.
func (f *Fleet) Hosts() int { return len(f.hosts) }

// Interval is the heartbeat interval the fleet uses.
func (f *Fleet) Interval() time.Duration { return f.interval }

// Start starts every host's heartbeat loop: the first beat staggered over
// one interval, then every interval ±10%, backing off on failure.
func (f *Fleet) Start(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		hctx, cancel := context.WithCancel(ctx)
		h.cancel, h.done = cancel, make(chan struct{})
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer close(h.done)
			f.loop(hctx, h)
		}()
	}
}

// Stop ends every host's loop and waits for them.
func (f *Fleet) Stop() {
	f.mu.Lock()
	for _, h := range f.hosts {
		if h.cancel != nil {
			h.cancel()
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Close stops the fleet and closes its idle connections.
func (f *Fleet) Close() {
	f.Stop()
	f.tr.CloseIdleConnections()
}

// Silenced is a host that was made to go silent.
type Silenced struct {
	HostID string
	// LastBeat is when its last heartbeat was answered.
	LastBeat time.Time
}

// Kill silences k running hosts (the last ones registered), as if their
// machines died, and returns them once their loops have ended.
func (f *Fleet) Kill(k int) []Silenced {
	f.mu.Lock()
	var victims []*host
	for i := len(f.hosts) - 1; i >= 0 && len(victims) < k; i-- {
		h := f.hosts[i]
		if h.cancel != nil {
			select {
			case <-h.done:
			default:
				victims = append(victims, h)
				h.cancel()
			}
		}
	}
	f.mu.Unlock()
	out := make([]Silenced, 0, len(victims))
	for _, h := range victims {
		<-h.done
		out = append(out, Silenced{HostID: h.reg.HostID, LastBeat: time.Unix(0, h.lastOK.Load())})
	}
	return out
}

// HostIDs returns the IDs of the registered hosts.
func (f *Fleet) HostIDs() []string {
	out := make([]string, len(f.hosts))
	for i, h := range f.hosts {
		out[i] = h.reg.HostID
	}
	return out
}

// loop is one simulated agent's heartbeat loop, the way agent/heartbeat runs
// it: jittered interval, and on failure its backoff (capped at the interval,
// honouring Retry-After). The client records every attempt.
func (f *Fleet) loop(ctx context.Context, h *host) {
	req := body(h.i)
	wait := mrand.N(f.interval)
	failures := 0
	policy := f.retry.Loop.CappedAt(f.interval)
	for backoff.Wait(ctx, wait) {
		_, err := f.agent.Heartbeat(ctx, h.reg.HostID, h.reg.HostToken, req)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			h.lastOK.Store(time.Now().UnixNano())
			wait = backoff.Spread(f.interval, 0.1)
			continue
		}
		failures++
		var retryAfter time.Duration
		var se *api.StatusError
		if errors.As(err, &se) {
			retryAfter = se.RetryAfter
		}
		wait = policy.Delay(failures, retryAfter)
	}
}

// recording records every heartbeat attempt the agents' client sends.
type recording struct {
	next http.RoundTripper
	rec  *recorder
}

func (r *recording) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := r.next.RoundTrip(req)
	if strings.HasSuffix(req.URL.Path, "/heartbeat") && req.Context().Err() == nil {
		code := 0
		if err == nil {
			code = resp.StatusCode
		}
		r.rec.add(start, time.Since(start), code)
	}
	return resp, err
}

// body is a realistic heartbeat of a workspace host.
func body(i int) api.HeartbeatRequest {
	since := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	return api.HeartbeatRequest{
		AgentVersion: "sim", BootID: "boot-" + strconv.Itoa(i), AppliedRevision: 1,
		Units: []api.UnitStatus{
			{Name: "runtime", State: api.UnitReady, Restarts: 0, Since: since},
			{Name: "cloudflared", State: api.UnitReady, Restarts: 1, Since: since},
			{Name: "platform", State: api.UnitReady, Image: "ghcr.io/molecule-ai/platform-tenant",
				ImageDigest: "sha256:4f6c1a3ec0e4b5d1d9c5b2f7f2b0a8c7e6d5c4b3a2918f7e6d5c4b3a29181716", Since: since},
		},
		Tunnel: &api.TunnelStatus{ID: fmt.Sprintf("6ff42ae2-765d-4adf-8112-%012d", i), ReadyConnections: 4},
		Boot:   []api.BootStep{{Step: "config", At: since}, {Step: "secrets", At: since.Add(time.Second)}, {Step: "units", At: since.Add(2 * time.Second)}},
	}
}
