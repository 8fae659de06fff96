//go:build unix

package container

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// sample is one good answer of GET /version.
type sample struct {
	at      time.Time
	version string
}

// poller GETs /version every 50 ms and records the good answers.
type poller struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startPoller(url string) *poller {
	p := &poller{stop: make(chan struct{})}
	c := &http.Client{Timeout: 45 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			resp, err := c.Get(url)
			if err != nil {
				continue
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 {
				p.mu.Lock()
				p.samples = append(p.samples, sample{time.Now(), string(b)})
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *poller) close() []sample {
	close(p.stop)
	p.wg.Wait()
	return p.samples
}

// gap is the time from the last good answer of from to the first good
// answer of to.
func gap(samples []sample, from, to string) (time.Duration, time.Time, bool) {
	var lastOld time.Time
	for _, s := range samples {
		switch s.version {
		case from:
			lastOld = s.at
		case to:
			if lastOld.IsZero() {
				return 0, s.at, false
			}
			return s.at.Sub(lastOld), s.at, true
		}
	}
	return 0, time.Time{}, false
}

// BenchmarkUpdate measures an update between two already-pulled healthy
// images: downtime (last good response from the old version to the first
// good one from the new, probing every 50 ms) and the time from the
// desired-state change to the new version answering.
//
// "bridge" runs the unit on Docker's default bridge, "network" on a
// user-defined network as the tenant role does.
func BenchmarkUpdate(b *testing.B) {
	b.Run("bridge", func(b *testing.B) { benchUpdate(b, false) })
	b.Run("network", func(b *testing.B) { benchUpdate(b, true) })
}

func benchUpdate(b *testing.B, userNet bool) {
	cli := containertest.Docker(b)
	reg := containertest.NewRegistry(b)
	agent := containertest.RunID()
	containertest.CleanupLabel(b, cli, LabelAgent, agent, reg.Host)
	v1 := reg.Push(b, "test/app", "v1", containertest.AppImage(b, containertest.Variant{Version: "v1"}))
	v2 := reg.Push(b, "test/app", "v2", containertest.AppImage(b, containertest.Variant{Version: "v2"}))
	ln := freePort(b)
	o := testOptions(engine(b), agent, b.TempDir())
	o.ProbeInterval = 50 * time.Millisecond
	if testing.Verbose() {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	spec := testSpec(agent, ln, v1)
	spec.UpdatePolicy = config.UpdateAuto
	if userNet {
		spec.Network = agent + "-net"
	}
	d, err := New(o, spec)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, img := range []string{v1, v2} { // pre-pull both
		if err := d.ensureImage(ctx, img); err != nil {
			b.Fatal(err)
		}
	}
	in, err := d.Start(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/version", ln)
	images := map[string]string{v1: "v1", v2: "v2"}
	var downtime, ready, updateCall time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		from, to := v1, v2
		if i%2 == 1 {
			from, to = v2, v1
		}
		if err := waitVersion(url, images[from]); err != nil {
			b.Fatal(err)
		}
		p := startPoller(url)
		if err := waitVersion(url, images[from]); err != nil { // the poller has seen the old version
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // let the poller record the old version (measurement, not sync)
		t0 := time.Now()
		next, err := d.Update(ctx, in, to, staticEnv(), &supervisor.HTTPProbe{URL: fmt.Sprintf("http://127.0.0.1:%d/health", ln)})
		if err != nil {
			p.close()
			b.Fatalf("update %s: %v", images[to], err)
		}
		updateCall += time.Since(t0)
		in = next
		if err := waitVersion(url, images[to]); err != nil {
			b.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		gapD, firstNew, ok := gap(p.close(), images[from], images[to])
		if !ok {
			b.Fatalf("poller did not see %s then %s", images[from], images[to])
		}
		downtime += gapD
		ready += firstNew.Sub(t0)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(downtime.Milliseconds())/n, "downtime-ms")
	b.ReportMetric(float64(ready.Milliseconds())/n, "desired-to-ready-ms")
	b.ReportMetric(float64(updateCall.Milliseconds())/n, "update-call-ms")
	if ci, ok := in.(*Instance); ok {
		stopCtx, c := context.WithTimeout(context.Background(), testenv.Long)
		_ = ci.Stop(stopCtx, 5*time.Second)
		c()
		ci.Detach()
	}
}

func waitVersion(url, want string) error {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(testenv.Long)
	for time.Now().Before(deadline) {
		if resp, err := c.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && string(b) == want {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("GET %s never answered %q", url, want)
}
