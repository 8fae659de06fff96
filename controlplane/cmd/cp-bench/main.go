// Command cp-bench measures the control plane as `make bench` reports it:
// it starts the real molecule-controlplane binary on SQLite and on a
// throwaway PostgreSQL, drives each with the fleet simulator (N agents
// enrolling and heartbeating over loopback HTTP) and prints heartbeats/s,
// latency p50/p99 and store transactions per flush window.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/sim"
	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

type opts struct {
	binary, backends string
	cfg              sim.Config
	interval         time.Duration
}

func main() {
	var o opts
	flag.StringVar(&o.binary, "binary", "bin/molecule-controlplane", "the control-plane binary to measure")
	flag.StringVar(&o.backends, "backends", "sqlite,postgres", "comma-separated: sqlite, postgres")
	flag.IntVar(&o.cfg.Hosts, "hosts", 2000, "simulated agents")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "heartbeat interval")
	flag.DurationVar(&o.cfg.Duration, "duration", 30*time.Second, "steady phase")
	flag.DurationVar(&o.cfg.SaturateFor, "saturate", 10*time.Second, "saturated phase")
	flag.IntVar(&o.cfg.Concurrency, "concurrency", 32, "workers in the saturated phase")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cp-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o opts) error {
	for _, b := range strings.Split(o.backends, ",") {
		fmt.Printf("== control plane on %s: %d agents, interval %s, steady %s, saturated %s with %d workers\n",
			b, o.cfg.Hosts, o.interval, o.cfg.Duration, o.cfg.SaturateFor, o.cfg.Concurrency)
		var err error
		switch b {
		case "sqlite":
			dir, derr := os.MkdirTemp("", "cp-bench-")
			if derr != nil {
				return derr
			}
			err = bench(ctx, o, "sqlite://"+filepath.Join(dir, "cp.db"), dir)
			_ = os.RemoveAll(dir)
		case "postgres":
			err = benchPostgres(ctx, o)
		default:
			return fmt.Errorf("--backends: unknown %q (want sqlite, postgres)", b)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
	}
	return nil
}

func benchPostgres(ctx context.Context, o opts) error {
	if os.Geteuid() != 0 {
		fmt.Println("skipped: PostgreSQL needs root to run a throwaway cluster as user postgres")
		return nil
	}
	if _, err := os.Stat(filepath.Join(pgtest.BinDir, "initdb")); err != nil {
		fmt.Println("skipped: PostgreSQL 15 not installed (apt-get install postgresql-15)")
		return nil
	}
	c, err := pgtest.StartCluster(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = c.Stop() }()
	dsn, err := c.NewDatabase(ctx)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "cp-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	return bench(ctx, o, dsn, dir)
}

func bench(ctx context.Context, o opts, dsn, dir string) error {
	tokb := make([]byte, 16)
	_, _ = rand.Read(tokb)
	tok := hex.EncodeToString(tokb)
	tokFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(o.binary, "serve", "--listen", addr, "--db", dsn, "--admin-token-file", tokFile,
		"--interval", o.interval.String(), "--host-rate", "1000", "--host-burst", "1000", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (run make build first): %w", o.binary, err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	url := "http://" + addr
	if err := waitHealthy(ctx, url); err != nil {
		return err
	}
	cfg := o.cfg
	cfg.URL, cfg.AdminToken = url, secret.New(tok)
	res, err := sim.Run(ctx, cfg)
	res.Report(os.Stdout)
	return err
}

func waitHealthy(ctx context.Context, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("control plane did not become healthy within 30s")
}
