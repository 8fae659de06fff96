// Package sim is a fleet simulator: N simulated agents register with a
// control plane by enrollment over real HTTP and heartbeat with realistic
// bodies and jitter. It measures heartbeats per second, latency and the
// control plane's store transactions per flush window (scraped from
// /metrics).
package sim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"

	"github.com/molecule-ai/molecule-agent/agent/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Config configures a simulation.
type Config struct {
	URL        string
	AdminToken secret.Secret
	Hosts      int
	// Interval is the steady-state heartbeat interval; 0 takes the
	// control plane's.
	Interval time.Duration
	// Duration of the steady phase.
	Duration time.Duration
	// SaturateFor, when positive, adds a phase where Concurrency workers
	// send heartbeats for the simulated hosts back to back, to find the
	// control plane's capacity.
	SaturateFor time.Duration
	Concurrency int
	Logger      *slog.Logger
}

// Phase is what one phase measured.
type Phase struct {
	Heartbeats  int64
	Errors      int64
	RateLimited int64
	Seconds     float64
	PerSecond   float64
	P50, P99    time.Duration
	// WriteTx is the control plane's store write transactions during the
	// phase, Windows the flush windows it spanned.
	WriteTx         float64
	Windows         float64
	TxPerWindow     float64
	FlushWindowSecs float64
}

// Result is the outcome of a simulation.
type Result struct {
	Hosts          int
	Registered     int
	RegisterP50    time.Duration
	RegisterP99    time.Duration
	RegisterErrors int
	Interval       time.Duration
	Steady         Phase
	Saturated      *Phase
}

type host struct {
	reg api.Registration
}

// Run registers cfg.Hosts simulated agents and runs the phases.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Hosts <= 0 {
		return Result{}, errors.New("--hosts must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tr := cleanhttp.DefaultPooledTransport()
	tr.MaxIdleConnsPerHost = cfg.Hosts + cfg.Concurrency
	tr.MaxIdleConns = tr.MaxIdleConnsPerHost
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	admin, err := api.New(api.Options{BaseURL: cfg.URL, AdminToken: cfg.AdminToken, HTTPClient: hc})
	if err != nil {
		return Result{}, err
	}
	agent, err := api.New(api.Options{BaseURL: cfg.URL, HTTPClient: hc, RetryMax: -1})
	if err != nil {
		return Result{}, err
	}
	tok, err := admin.CreateEnrollmentToken(ctx, api.EnrollmentTokenRequest{Org: "sim", Role: api.RoleWorkspace, Channel: "stable"})
	if err != nil {
		return Result{}, fmt.Errorf("create enrollment token (is --admin-token right?): %w", err)
	}
	run := make([]byte, 4)
	_, _ = rand.Read(run)
	res := Result{Hosts: cfg.Hosts}
	hosts, lat, regErrs := register(ctx, agent, secret.New(tok.Token), hex.EncodeToString(run), cfg.Hosts)
	res.Registered, res.RegisterErrors = len(hosts), regErrs
	res.RegisterP50, res.RegisterP99 = pct(lat, 50), pct(lat, 99)
	if len(hosts) == 0 {
		return res, errors.New("no simulated host could register")
	}
	res.Interval = cfg.Interval
	if res.Interval <= 0 {
		res.Interval = hosts[0].reg.Interval
	}
	cfg.Logger.Info("registered", "hosts", len(hosts), "errors", regErrs, "interval", res.Interval)
	res.Steady, err = measure(ctx, hc, cfg.URL, func(ctx context.Context) *stats {
		return steady(ctx, agent, hosts, res.Interval, cfg.Duration)
	})
	if err != nil {
		return res, err
	}
	if cfg.SaturateFor > 0 {
		p, err := measure(ctx, hc, cfg.URL, func(ctx context.Context) *stats {
			return saturate(ctx, hc, cfg.URL, hosts, max(1, cfg.Concurrency), cfg.SaturateFor)
		})
		if err != nil {
			return res, err
		}
		res.Saturated = &p
	}
	return res, nil
}

func register(ctx context.Context, c *api.Client, tok secret.Secret, run string, n int) ([]*host, []time.Duration, int) {
	var (
		mu    sync.Mutex
		hosts []*host
		lat   []time.Duration
		errs  int
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 32)
	)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			reg, err := c.Register(ctx, api.Proof{EnrollmentToken: tok, MachineID: fmt.Sprintf("sim-%s-%d", run, i)}, secret.Secret{},
				api.RegisterRequest{AgentVersion: "sim", BootID: fmt.Sprintf("boot-%s-%d", run, i), Hostname: fmt.Sprintf("sim-%d", i)})
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				return
			}
			hosts = append(hosts, &host{reg: reg})
			lat = append(lat, d)
		}()
	}
	wg.Wait()
	return hosts, lat, errs
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

type stats struct {
	mu          sync.Mutex
	lat         []time.Duration
	errs, limit atomic.Int64
	secs        float64
}

func (s *stats) add(lat []time.Duration) {
	s.mu.Lock()
	s.lat = append(s.lat, lat...)
	s.mu.Unlock()
}

func (s *stats) record(err error, d time.Duration, lat *[]time.Duration) {
	switch {
	case err == nil:
		*lat = append(*lat, d)
	case errors.Is(err, api.ErrRateLimited):
		s.limit.Add(1)
	default:
		s.errs.Add(1)
	}
}

// steady runs each host's heartbeat loop at interval with ±10% jitter and
// a staggered first beat, as agents do.
func steady(ctx context.Context, c *api.Client, hosts []*host, interval, d time.Duration) *stats {
	st := &stats{}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			var lat []time.Duration
			defer func() { st.add(lat) }()
			req := body(i)
			wait := mrand.N(interval)
			for {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				s := time.Now()
				_, err := c.Heartbeat(ctx, h.reg.HostID, h.reg.HostToken, req)
				if ctx.Err() != nil {
					return
				}
				st.record(err, time.Since(s), &lat)
				wait = interval - interval/10 + mrand.N(interval/5+1)
			}
		})
	}
	wg.Wait()
	st.secs = time.Since(start).Seconds()
	return st
}

// saturate sends heartbeats back to back from workers, each cycling over
// its share of the hosts. It skips the retrying client and sends
// pre-encoded bodies, so that the load generator, which shares the machine,
// spends as little CPU as it can: the phase measures the control plane.
func saturate(ctx context.Context, hc *http.Client, url string, hosts []*host, workers int, d time.Duration) *stats {
	st := &stats{}
	type pre struct {
		url, auth string
		body      []byte
	}
	reqs := make([]pre, len(hosts))
	for i, h := range hosts {
		b, _ := json.Marshal(body(i))
		reqs[i] = pre{strings.TrimSuffix(url, "/") + fmt.Sprintf(api.PathHeartbeatFmt, h.reg.HostID), "Bearer " + h.reg.HostToken.Reveal(), b}
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var lat []time.Duration
			defer func() { st.add(lat) }()
			for i := w; ctx.Err() == nil; i += workers {
				p := reqs[i%len(reqs)]
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.body))
				if err != nil {
					st.errs.Add(1)
					return
				}
				req.Header.Set("Authorization", p.auth)
				req.Header.Set("Content-Type", "application/json")
				s := time.Now()
				resp, err := hc.Do(req)
				if ctx.Err() != nil {
					if err == nil {
						_ = resp.Body.Close()
					}
					return
				}
				if err != nil {
					st.errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					lat = append(lat, time.Since(s))
				case http.StatusTooManyRequests:
					st.limit.Add(1)
				default:
					st.errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	st.secs = time.Since(start).Seconds()
	return st
}

// measure runs a phase between two scrapes of the control plane's metrics.
func measure(ctx context.Context, hc *http.Client, url string, phase func(context.Context) *stats) (Phase, error) {
	before, err := scrape(ctx, hc, url)
	if err != nil {
		return Phase{}, err
	}
	st := phase(ctx)
	after, err := scrape(ctx, hc, url)
	if err != nil {
		return Phase{}, err
	}
	p := Phase{
		Heartbeats: int64(len(st.lat)), Errors: st.errs.Load(), RateLimited: st.limit.Load(), Seconds: st.secs,
		P50: pct(st.lat, 50), P99: pct(st.lat, 99),
		WriteTx:         after["molecule_cp_store_write_transactions_total"] - before["molecule_cp_store_write_transactions_total"],
		FlushWindowSecs: after["molecule_cp_flush_window_seconds"],
	}
	if st.secs > 0 {
		p.PerSecond = float64(p.Heartbeats) / st.secs
	}
	if p.FlushWindowSecs > 0 {
		p.Windows = st.secs / p.FlushWindowSecs
		p.TxPerWindow = p.WriteTx / p.Windows
	}
	return p, nil
}

func scrape(ctx context.Context, hc *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+api.PathMetrics, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = f
		}
	}
	return out, sc.Err()
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// Report writes r in a human-readable form.
func (r Result) Report(w io.Writer) {
	fmt.Fprintf(w, "hosts: %d registered (%d errors), register latency p50 %s p99 %s\n", r.Registered, r.RegisterErrors, r.RegisterP50, r.RegisterP99)
	phase := func(name string, p Phase) {
		fmt.Fprintf(w, "%s: %d heartbeats in %.1fs = %.0f/s, latency p50 %s p99 %s, errors %d, 429s %d\n",
			name, p.Heartbeats, p.Seconds, p.PerSecond, p.P50, p.P99, p.Errors, p.RateLimited)
		fmt.Fprintf(w, "%s: store write transactions %.0f over %.1f flush windows of %.0fs = %.2f per window\n",
			name, p.WriteTx, p.Windows, p.FlushWindowSecs, p.TxPerWindow)
	}
	phase(fmt.Sprintf("steady (interval %s)", r.Interval), r.Steady)
	if r.Saturated != nil {
		phase("saturated", *r.Saturated)
	}
}
