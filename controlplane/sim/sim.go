// Package sim is a fleet simulator: N simulated agents register with a
// control plane by enrollment over real HTTP and heartbeat with realistic
// bodies, jitter, and the shipped agent's retries: api.AgentRetry within a
// call, agent/heartbeat's backoff between calls (honouring Retry-After). It
// measures heartbeats per second, latency, the control plane's store
// transactions per flush window (scraped from /metrics), the detection
// latency of hosts that go silent, and the request peak around a control
// plane outage.
package sim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// Config configures a simulation.
type Config struct {
	URL        string
	AdminToken secret.Secret
	Hosts      int
	// Interval is the steady-state heartbeat interval; 0 takes the
	// control plane's.
	Interval time.Duration
	// Retry is the agents' retry policy (see FleetConfig).
	Retry api.RetryPolicy
	// Duration of the steady phase.
	Duration time.Duration
	// Kill silences that many hosts one interval into the steady phase and
	// measures how long the control plane takes to mark them offline (the
	// steady phase lasts until they are all detected, at most 10 intervals
	// after the kill).
	Kill int
	// SaturateFor, when positive, adds a phase where Concurrency workers
	// send heartbeats for the simulated hosts back to back, to find the
	// control plane's capacity.
	SaturateFor time.Duration
	Concurrency int
	Logger      *slog.Logger
}

// Phase is what one phase measured.
type Phase struct {
	Window
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
	// Detection is set when hosts were killed; WrongOffline counts offline
	// events for hosts that were not.
	Detection    *Detection
	WrongOffline int
	Saturated    *Phase
}

// Run registers cfg.Hosts simulated agents and runs the phases.
func Run(ctx context.Context, cfg Config) (Result, error) {
	res := Result{Hosts: cfg.Hosts}
	f, err := Enroll(ctx, FleetConfig{URL: cfg.URL, AdminToken: cfg.AdminToken, Hosts: cfg.Hosts, Interval: cfg.Interval,
		Retry: cfg.Retry, Logger: cfg.Logger})
	if err != nil {
		return res, err
	}
	defer f.Close()
	res.Registered, res.RegisterErrors, res.Interval = f.Hosts(), f.RegisterErrors, f.Interval()
	res.RegisterP50, res.RegisterP99 = pct(f.RegisterLatency, 50), pct(f.RegisterLatency, 99)
	before, err := f.Scrape(ctx)
	if err != nil {
		return res, err
	}
	start := time.Now()
	f.Start(ctx)
	var killed []Silenced
	if cfg.Kill > 0 {
		backoff.Wait(ctx, f.Interval())
		killed = f.Kill(cfg.Kill)
		d, err := f.Detect(ctx, killed, 10*f.Interval())
		if err != nil {
			return res, err
		}
		res.Detection = &d
	}
	backoff.Wait(ctx, time.Until(start.Add(cfg.Duration)))
	end := time.Now()
	f.Stop()
	after, err := f.Scrape(ctx)
	if err != nil {
		return res, err
	}
	res.Steady = PhaseOf(f.Window(start, end), before, after)
	if res.WrongOffline, err = f.OfflineSince(ctx, start, killed); err != nil {
		return res, err
	}
	if cfg.SaturateFor > 0 {
		p, err := Saturate(ctx, f, cfg.Concurrency, cfg.SaturateFor)
		if err != nil {
			return res, err
		}
		res.Saturated = &p
	}
	return res, nil
}

// Saturate sends heartbeats for the fleet's hosts back to back from
// workers for d (the fleet's own loops must not run) and measures the
// control plane's capacity.
func Saturate(ctx context.Context, f *Fleet, workers int, d time.Duration) (Phase, error) {
	before, err := f.Scrape(ctx)
	if err != nil {
		return Phase{}, err
	}
	st := saturate(ctx, f.hc, f.cfg.URL, f.hosts, max(1, workers), d)
	after, err := f.Scrape(ctx)
	if err != nil {
		return Phase{}, err
	}
	w := Window{Seconds: st.secs, Heartbeats: int64(len(st.lat)), RateLimited: st.limit.Load(), Errors: st.errs.Load(),
		P50: pct(st.lat, 50), P99: pct(st.lat, 99)}
	w.Requests = w.Heartbeats + w.RateLimited
	if st.secs > 0 {
		w.PerSecond = float64(w.Heartbeats) / st.secs
	}
	return PhaseOf(w, before, after), nil
}

// PhaseOf combines what the fleet saw with the control plane's metrics
// scraped before and after.
func PhaseOf(w Window, before, after map[string]float64) Phase {
	const tx = "molecule_cp_store_write_transactions_total"
	p := Phase{Window: w, WriteTx: after[tx] - before[tx], FlushWindowSecs: after["molecule_cp_flush_window_seconds"]}
	if p.FlushWindowSecs > 0 {
		p.Windows = w.Seconds / p.FlushWindowSecs
		p.TxPerWindow = p.WriteTx / p.Windows
	}
	return p
}

// Scrape reads the control plane's /metrics.
func (f *Fleet) Scrape(ctx context.Context) (map[string]float64, error) {
	return scrape(ctx, f.hc, f.cfg.URL)
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

// Report writes r in a human-readable form.
func (r Result) Report(w io.Writer) {
	fmt.Fprintf(w, "hosts: %d registered (%d errors), register latency p50 %s p99 %s\n", r.Registered, r.RegisterErrors, r.RegisterP50, r.RegisterP99)
	phase := func(name string, p Phase) {
		fmt.Fprintf(w, "%s: %d heartbeats in %.1fs = %.0f/s, latency p50 %s p99 %s, errors %d, 429s %d\n",
			name, p.Heartbeats, p.Seconds, p.PerSecond, p.P50, p.P99, p.Errors, p.RateLimited)
		fmt.Fprintf(w, "%s: store write transactions %.0f over %.1f flush windows of %.0fs = %.2f per window (%.2f/s)\n",
			name, p.WriteTx, p.Windows, p.FlushWindowSecs, p.TxPerWindow, p.WriteTx/max(p.Seconds, 1e-9))
	}
	phase(fmt.Sprintf("steady (interval %s)", r.Interval), r.Steady)
	if d := r.Detection; d != nil {
		fmt.Fprintf(w, "killed %d hosts: %d detected offline, detection latency p50 %s p99 %s max %s; %d other hosts wrongly offline\n",
			d.Killed, d.Detected, d.P50.Round(time.Millisecond), d.P99.Round(time.Millisecond), d.Max.Round(time.Millisecond), r.WrongOffline)
	}
	if r.Saturated != nil {
		phase("saturated", *r.Saturated)
	}
}
