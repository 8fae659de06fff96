package heartbeat

import (
	"testing"
	"time"
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
		if got := l.maxBackoff(tt.interval); got != tt.want {
			t.Errorf("maxBackoff(%v) = %v, want %v", tt.interval, got, tt.want)
		}
	}
	for failures := 1; failures < 20; failures++ {
		if d := Backoff(time.Second, l.maxBackoff(10*time.Second), failures, 0); d > 10*time.Second {
			t.Fatalf("failure %d: backoff %v beyond the 10 s interval", failures, d)
		}
	}
}
