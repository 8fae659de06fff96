// Command cp-bench measures the control plane as `make bench` reports it:
// it starts the real molecule-controlplane binary on SQLite and on a
// throwaway PostgreSQL, drives each with the fleet simulator (N agents
// enrolling and heartbeating over loopback HTTP) and prints, per backend:
// saturated heartbeats/s, steady latency p50/p99, store transactions per
// flush window, the detection latency of killed hosts, and the request
// peak after a control-plane restart. It ends with a Markdown table.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/store/pgtest"
)

type opts struct {
	binary, backends string
	hosts, kill      int
	concurrency      int
	interval         time.Duration
	saturate, steady time.Duration
}

func main() {
	var o opts
	flag.StringVar(&o.binary, "binary", "bin/molecule-controlplane", "the control-plane binary to measure")
	flag.StringVar(&o.backends, "backends", "sqlite,postgres", "comma-separated: sqlite, postgres")
	flag.IntVar(&o.hosts, "hosts", 10000, "simulated agents")
	flag.IntVar(&o.kill, "kill", 100, "hosts silenced to measure failure detection")
	flag.DurationVar(&o.interval, "interval", 10*time.Second, "heartbeat interval")
	flag.DurationVar(&o.steady, "steady", 20*time.Second, "steady phase (no failures) measuring latency and transactions per window")
	flag.DurationVar(&o.saturate, "saturate", 10*time.Second, "saturated phase")
	flag.IntVar(&o.concurrency, "concurrency", 32, "workers in the saturated phase")
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
	var rows []row
	for _, b := range strings.Split(o.backends, ",") {
		fmt.Printf("== control plane on %s: %d agents, interval %s\n", b, o.hosts, o.interval)
		var (
			r   row
			err error
		)
		switch b {
		case "sqlite":
			dir, derr := os.MkdirTemp("", "cp-bench-")
			if derr != nil {
				return derr
			}
			r, err = bench(ctx, o, "sqlite://"+filepath.Join(dir, "cp.db"), dir)
			_ = os.RemoveAll(dir)
		case "postgres":
			r, err = benchPostgres(ctx, o)
		default:
			return fmt.Errorf("--backends: unknown %q (want sqlite, postgres)", b)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", b, err)
		}
		if r.backend != "" {
			rows = append(rows, r)
		}
	}
	printTable(os.Stdout, o, rows)
	return nil
}

func benchPostgres(ctx context.Context, o opts) (row, error) {
	if os.Geteuid() != 0 {
		fmt.Println("skipped: PostgreSQL needs root to run a throwaway cluster as user postgres")
		return row{}, nil
	}
	if _, err := os.Stat(filepath.Join(pgtest.BinDir, "initdb")); err != nil {
		fmt.Println("skipped: PostgreSQL 15 not installed (apt-get install postgresql-15)")
		return row{}, nil
	}
	c, err := pgtest.StartCluster(ctx)
	if err != nil {
		return row{}, err
	}
	defer func() { _ = c.Stop() }()
	dsn, err := c.NewDatabase(ctx)
	if err != nil {
		return row{}, err
	}
	dir, err := os.MkdirTemp("", "cp-bench-")
	if err != nil {
		return row{}, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	return bench(ctx, o, dsn, dir)
}
