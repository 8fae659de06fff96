package sim

import (
	"bytes"
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/server"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunAgainstRealServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	srv, err := server.New(ctx, server.Config{Store: st, AdminToken: secret.New("adm"), Interval: 200 * time.Millisecond,
		Grace:       100 * time.Millisecond,
		FlushWindow: 200 * time.Millisecond, HostRate: 1000, HostBurst: 1000})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	res, err := Run(ctx, Config{URL: hs.URL, AdminToken: secret.New("adm"), Hosts: 20, Duration: time.Second, Kill: 3,
		SaturateFor: 300 * time.Millisecond, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Registered != 20 || res.RegisterErrors != 0 {
		t.Errorf("registered %d (%d errors), want 20", res.Registered, res.RegisterErrors)
	}
	if res.Interval != 200*time.Millisecond {
		t.Errorf("interval = %s, want the server's 200ms", res.Interval)
	}
	if d := res.Detection; d == nil || d.Killed != 3 || d.Detected != 3 || d.P50 <= 0 || d.P99 < d.P50 {
		t.Errorf("detection = %+v, want 3 of 3 killed hosts detected with p50 <= p99", d)
	}
	if res.WrongOffline != 0 {
		t.Errorf("%d live hosts marked offline, want 0", res.WrongOffline)
	}
	for name, p := range map[string]Phase{"steady": res.Steady, "saturated": *res.Saturated} {
		if p.Heartbeats == 0 || p.Errors != 0 || p.P99 < p.P50 {
			t.Errorf("%s: %+v; want heartbeats, no errors, p99 >= p50", name, p)
		}
		if p.WriteTx > p.Windows+1 {
			t.Errorf("%s: %.0f write transactions over %.1f windows, want at most one per window", name, p.WriteTx, p.Windows)
		}
	}
	var out bytes.Buffer
	res.Report(&out)
	if !strings.Contains(out.String(), "per window") || !strings.Contains(out.String(), "detection latency") {
		t.Errorf("report lacks the transactions line:\n%s", out.String())
	}
	cancel()
	if err := <-runDone; err != nil {
		t.Errorf("server Run = %v", err)
	}
}

func TestPct(t *testing.T) {
	d := []time.Duration{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	if got := pct(d, 50); got != 5 {
		t.Errorf("p50 = %d, want 5", got)
	}
	if got := pct(d, 99); got != 10 {
		t.Errorf("p99 = %d, want 10", got)
	}
	if got := pct(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %d, want 0", got)
	}
}

func TestPeak(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	f := &Fleet{}
	for _, ms := range []int{0, 100, 900, 1000, 1050, 1100, 1500, 3000} {
		f.rec.add(t0.Add(time.Duration(ms)*time.Millisecond), time.Millisecond, 200)
	}
	f.rec.add(t0.Add(1200*time.Millisecond), time.Millisecond, 0) // no answer: not a request
	got, at := f.Peak(t0, t0.Add(3*time.Second), time.Second)
	if got != 5 || !at.Equal(t0.Add(900*time.Millisecond)) {
		t.Errorf("peak = %d at %s, want 5 at +900ms", got, at.Sub(t0))
	}
	if n := f.Count(t0, t0.Add(time.Second)); n != 3 {
		t.Errorf("count in the first second = %d, want 3", n)
	}
}
