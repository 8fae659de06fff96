//go:build unix

// Command agent-bench measures the agent against design.md §4: RSS with four
// idle units, agent start to all units started, and crash to restart.
// `make bench` runs it; it prints a Markdown table for the README.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	agent := flag.String("agent", "bin/molecule-agent", "agent binary")
	cloudflared := flag.String("cloudflared", "bin/cloudflared", "cloudflared binary (empty: skip its measurement)")
	kills := flag.Int("kills", 20, "crash/restart samples")
	inNetns := flag.Bool("in-netns", false, "internal: run the cloudflared measurement (inside an empty network namespace)")
	sizesOf := flag.String("sizes", "", "print the symbol bytes per module of this binary (built without -s) and exit")
	flag.Parse()
	var err error
	switch {
	case *sizesOf != "":
		err = sizes(*sizesOf, 25)
	case *inNetns:
		err = benchCloudflared(*agent, *cloudflared, *kills)
	default:
		err = run(*agent, *kills)
		if err == nil && *cloudflared != "" {
			err = inEmptyNetns(*agent, *cloudflared, *kills)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent-bench:", err)
		os.Exit(1)
	}
}

type record struct {
	Time time.Time `json:"time"`
	Msg  string    `json:"msg"`
	Unit string    `json:"unit"`
	ID   string    `json:"id"`
}

const units = `
units:
  - {name: idle-1, command: /bin/sleep, args: ["100000"]}
  - {name: idle-2, command: /bin/sleep, args: ["100000"]}
  - {name: idle-3, command: /bin/sleep, args: ["100000"]}
  - name: crashy
    command: /bin/sleep
    args: ["100000"]
    restart: {stable_after: 500ms, budget: 1000}
`

func run(agent string, kills int) error {
	dir, err := os.MkdirTemp("", "agent-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "agent.yaml")
	body := fmt.Sprintf("state_dir: %s/state\nrun_dir: %s/run\n%s", dir, dir, units)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(agent, "run", "--config", cfg)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	recs := make(chan record, 1024)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	go scan(out, recs)

	var first time.Time
	started := map[string]record{}
	for len(started) < 4 {
		r, err := next(recs)
		if err != nil {
			return err
		}
		if first.IsZero() {
			first = r.Time
		}
		if r.Msg == "unit started" {
			started[r.Unit] = r
		}
	}
	var last time.Time
	for _, r := range started {
		if r.Time.After(last) {
			last = r.Time
		}
	}
	fmt.Printf("| agent start → all 4 units started (agent's own clock, first log record → last unit started) | %.1f ms | ≤ 100 ms |\n", ms(last.Sub(first)))
	fmt.Printf("| exec of the agent → all 4 units started (includes Go runtime start and config load) | %.1f ms | — |\n", ms(last.Sub(t0)))

	time.Sleep(5 * time.Second)
	fmt.Printf("| agent RSS, 4 idle units, after 5 s | %.1f MiB | ≤ 20 MiB |\n", float64(rssKiB(cmd.Process.Pid))/1024)

	var lat []time.Duration
	pid := pidOf(started["crashy"].ID)
	for range kills {
		time.Sleep(700 * time.Millisecond) // past stable_after: each crash is a first restart
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill %d: %w", pid, err)
		}
		for {
			r, err := next(recs)
			if err != nil {
				return err
			}
			if r.Msg == "unit started" && r.Unit == "crashy" {
				lat = append(lat, r.Time.Sub(killed))
				pid = pidOf(r.ID)
				break
			}
		}
	}
	slices.Sort(lat)
	fmt.Printf("| crashed unit → restarted, first restart (%d kills; backoff 100 ms with full jitter) | p50 %.0f ms, p95 %.0f ms, max %.0f ms | ≤ 200 ms |\n",
		len(lat), ms(pct(lat, 50)), ms(pct(lat, 95)), ms(lat[len(lat)-1]))
	return nil
}

func scan(r io.Reader, recs chan<- record) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var rec record
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			recs <- rec
		}
	}
	close(recs)
}

func next(recs <-chan record) (record, error) {
	select {
	case r, ok := <-recs:
		if !ok {
			return r, errors.New("agent exited")
		}
		return r, nil
	case <-time.After(30 * time.Second):
		return record{}, context.DeadlineExceeded
	}
}

func pidOf(id string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(id, "pid "))
	return n
}

func rssKiB(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func pct(d []time.Duration, p int) time.Duration { return d[(len(d)-1)*p/100] }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
