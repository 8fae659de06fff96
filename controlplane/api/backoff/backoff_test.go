package backoff

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		name             string
		attempt          int
		retryAfter       time.Duration
		wantMin, wantMax time.Duration
	}{
		{"first retry", 1, 0, 50 * time.Millisecond, 200 * time.Millisecond},
		{"second retry: the ceiling doubles", 2, 0, 50 * time.Millisecond, 400 * time.Millisecond},
		{"capped at the maximum", 20, 0, 50 * time.Millisecond, time.Second},
		{"huge attempt does not overflow", 1 << 20, 0, 50 * time.Millisecond, time.Second},
		{"never before Retry-After, spread by up to 10 %", 1, 3 * time.Second, 3 * time.Second, 3300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 500 {
				if got := p.Delay(tt.attempt, tt.retryAfter); got < tt.wantMin || got > tt.wantMax {
					t.Fatalf("Delay(%d, %s) = %s, want within [%s, %s]", tt.attempt, tt.retryAfter, got, tt.wantMin, tt.wantMax)
				}
			}
		})
	}
}

func TestCappedAt(t *testing.T) {
	p := Policy{Min: time.Second, Max: time.Minute}
	tests := []struct {
		cap, want time.Duration
	}{
		{0, time.Minute},                      // no interval yet: the configured cap
		{10 * time.Second, 10 * time.Second},  // never retry less often than we beat
		{2 * time.Minute, time.Minute},        // the configured cap still holds
		{100 * time.Millisecond, time.Second}, // never below the minimum
	}
	for _, tt := range tests {
		if got := p.CappedAt(tt.cap).Max; got != tt.want {
			t.Errorf("CappedAt(%s).Max = %s, want %s", tt.cap, got, tt.want)
		}
	}
}

func TestSpread(t *testing.T) {
	for range 500 {
		if got := Spread(10*time.Second, 0.1); got < 9*time.Second || got > 11*time.Second {
			t.Fatalf("Spread(10s, 0.1) = %s, want within [9s, 11s]", got)
		}
	}
	if got := Spread(time.Second, 0); got != time.Second {
		t.Errorf("Spread(1s, 0) = %s, want 1s", got)
	}
}

func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		if !Wait(context.Background(), time.Minute) {
			t.Error("Wait for a minute with a live context: want true")
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(time.Second); cancel() }()
		if Wait(ctx, time.Hour) {
			t.Error("Wait cut short by its context: want false")
		}
	})
}
