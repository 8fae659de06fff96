//go:build unix

package heartbeat

import (
	"context"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

func TestBackoffCappedAtTheInterval(t *testing.T) {
	l := &Loop{cfg: Config{MinBackoff: time.Second, MaxBackoff: time.Minute}}
	tests := []struct {
		interval, want time.Duration
	}{
		{0, time.Minute},                      // not registered yet: the configured cap
		{10 * time.Second, 10 * time.Second},  // never retry less often than we beat
		{2 * time.Minute, time.Minute},        // the configured cap still holds
		{100 * time.Millisecond, time.Second}, // never below the minimum
	}
	for _, tt := range tests {
		if got := l.backoff(tt.interval).Max; got != tt.want {
			t.Errorf("backoff(%v).Max = %v, want %v", tt.interval, got, tt.want)
		}
	}
	for failures := 1; failures < 20; failures++ {
		if d := l.backoff(10*time.Second).Delay(failures, 0); d > 10*time.Second {
			t.Fatalf("failure %d: backoff %v beyond the 10 s interval", failures, d)
		}
	}
}

// TestDefaultsAreTheAgentRetryPolicy: the loop's defaults are
// api.AgentRetry's, the policy the simulator and the drills measure.
func TestDefaultsAreTheAgentRetryPolicy(t *testing.T) {
	l, err := New(Config{Client: &api.Client{}, StateDir: t.TempDir(), Proof: func(context.Context) (api.Proof, error) { return api.Proof{}, nil },
		Snapshot: func() api.HeartbeatRequest { return api.HeartbeatRequest{} }, Register: api.RegisterRequest{BootID: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.backoff(0); got != api.AgentRetry.Loop {
		t.Errorf("default backoff %+v, want api.AgentRetry.Loop %+v", got, api.AgentRetry.Loop)
	}
}
