package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/sim"
)

// row is one backend's results.
type row struct {
	backend           string
	hosts             int
	saturated         sim.Phase
	steady            sim.Phase
	detection         sim.Detection
	wrongOffline      int
	peak, firstWindow float64 // × steady requests per interval
	restartDown       time.Duration
}

// cp is the control-plane process under test.
type cp struct {
	binary, addr, dsn, tokFile string
	interval                   time.Duration
	cmd                        *exec.Cmd
}

func (c *cp) start(ctx context.Context, extra ...string) error {
	args := append([]string{"serve", "--listen", c.addr, "--db", c.dsn, "--admin-token-file", c.tokFile,
		"--interval", c.interval.String(), "--host-rate", "1000", "--host-burst", "1000", "--log-level", "warn"}, extra...)
	c.cmd = exec.Command(c.binary, args...)
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		return fmt.Errorf("start %s (run make build first): %w", c.binary, err)
	}
	return waitHealthy(ctx, "http://"+c.addr)
}

func (c *cp) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	_ = c.cmd.Wait()
	c.cmd = nil
}

// bench runs the phases against one database:
//
//  1. shedding off: enroll the fleet, then saturate (capacity);
//  2. restart with the defaults and run the fleet's loops; one interval in,
//     the steady phase (heartbeats/s, latency, transactions per flush
//     window); then silence --kill hosts and wait until all are offline
//     (detection latency);
//  3. restart the control plane under load and watch three intervals: the
//     request peak against the steady rate, and that nobody was marked
//     offline.
func bench(ctx context.Context, o opts, dsn, dir string) (row, error) {
	r := row{backend: dsn[:len("sqlite")], hosts: o.hosts}
	if r.backend != "sqlite" {
		r.backend = "postgres"
	}
	tokb := make([]byte, 16)
	_, _ = rand.Read(tokb)
	tok := hex.EncodeToString(tokb)
	c := &cp{binary: o.binary, dsn: dsn, tokFile: filepath.Join(dir, "admin-token"), interval: o.interval}
	if err := os.WriteFile(c.tokFile, []byte(tok), 0o600); err != nil {
		return r, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	c.addr = ln.Addr().String()
	_ = ln.Close()
	defer c.stop()
	url := "http://" + c.addr

	if err := c.start(ctx, "--shed-factor", "-1"); err != nil {
		return r, err
	}
	t := time.Now()
	f, err := sim.Enroll(ctx, sim.FleetConfig{URL: url, AdminToken: secret.New(tok), Hosts: o.hosts, Interval: o.interval})
	if err != nil {
		return r, err
	}
	defer f.Close()
	fmt.Printf("enrolled %d hosts (%d errors) in %s\n", f.Hosts(), f.RegisterErrors, time.Since(t).Round(time.Millisecond))
	if r.saturated, err = sim.Saturate(ctx, f, o.concurrency, o.saturate); err != nil {
		return r, err
	}
	report(os.Stdout, "saturated", r.saturated)

	c.stop()
	if err := c.start(ctx); err != nil {
		return r, err
	}
	f.Start(ctx)
	if !backoff.Wait(ctx, o.interval+2*time.Second) { // every host beat once since the start
		return r, ctx.Err()
	}
	before, err := f.Scrape(ctx)
	if err != nil {
		return r, err
	}
	start := time.Now()
	if !backoff.Wait(ctx, o.steady) {
		return r, ctx.Err()
	}
	end := time.Now()
	after, err := f.Scrape(ctx)
	if err != nil {
		return r, err
	}
	r.steady = sim.PhaseOf(f.Window(start, end), before, after)
	report(os.Stdout, "steady", r.steady)
	killed := f.Kill(o.kill)
	if r.detection, err = f.Detect(ctx, killed, 10*o.interval); err != nil {
		return r, err
	}
	fmt.Printf("killed %d hosts: %d detected offline, detection latency p50 %s p99 %s max %s\n", r.detection.Killed,
		r.detection.Detected, r.detection.P50.Round(time.Millisecond), r.detection.P99.Round(time.Millisecond), r.detection.Max.Round(time.Millisecond))

	down := time.Now()
	c.stop()
	if err := c.start(ctx); err != nil {
		return r, err
	}
	up := time.Now()
	r.restartDown = up.Sub(down)
	if !backoff.Wait(ctx, 3*o.interval+5*time.Second) { // past the restart window: anyone wrongly offline shows
		return r, ctx.Err()
	}
	perInterval := float64(r.steady.Requests) / (r.steady.Seconds / o.interval.Seconds())
	peak, at := f.Peak(up, up.Add(2*o.interval), o.interval)
	r.peak = float64(peak) / perInterval
	r.firstWindow = float64(f.Count(up, up.Add(o.interval))) / perInterval
	if r.wrongOffline, err = f.OfflineSince(ctx, down, killed); err != nil {
		return r, err
	}
	fmt.Printf("restart: down %s; requests in the first interval %.2f× steady, peak interval %.2f× steady (at +%s); %d hosts wrongly offline\n",
		r.restartDown.Round(time.Millisecond), r.firstWindow, r.peak, at.Sub(up).Round(time.Millisecond), r.wrongOffline)
	return r, nil
}

func report(w io.Writer, name string, p sim.Phase) {
	fmt.Fprintf(w, "%s: %d heartbeats in %.1fs = %.0f/s, latency p50 %s p99 %s, errors %d, 429s %d; store write transactions %.0f over %.1f windows = %.2f per window\n",
		name, p.Heartbeats, p.Seconds, p.PerSecond, p.P50, p.P99, p.Errors, p.RateLimited, p.WriteTx, p.Windows, p.TxPerWindow)
}

func waitHealthy(ctx context.Context, url string) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if !backoff.Wait(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
	return errors.New("control plane did not become healthy within 60s")
}

// printTable prints the Markdown table for the README.
func printTable(w io.Writer, o opts, rows []row) {
	fmt.Fprintf(w, "\n`go run ./controlplane/cmd/cp-bench --hosts %d --interval %s --kill %d` (make bench), %s\n\n",
		o.hosts, o.interval, o.kill, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintln(w, "| store | hosts | heartbeats/s (saturated) | steady p50 / p99 | store tx per flush window (target ≤ 1) | failure detection p50 / p99 (target ≤ 35 s) | request peak after restart (target ≤ 1.5×) | wrongly offline |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d | %.0f | %s / %s | %.2f | %.1f s / %.1f s (%d/%d killed) | %.2f× (first interval %.2f×) | %d |\n",
			r.backend, r.hosts, r.saturated.PerSecond, r.steady.P50.Round(10*time.Microsecond), r.steady.P99.Round(10*time.Microsecond),
			r.steady.TxPerWindow, r.detection.P50.Seconds(), r.detection.P99.Seconds(), r.detection.Detected, r.detection.Killed,
			r.peak, r.firstWindow, r.wrongOffline)
	}
}
