package server

import (
	"testing"
	"time"
)

func TestShedderBudget(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		factor   float64
		hosts    int
		interval time.Duration
		// sent is how many requests arrive at once; want how many pass.
		sent, want int
	}{
		{"small fleet gets the floor", 1.5, 10, 10 * time.Second, 500, shedFloor},
		{"budget follows the fleet", 1.5, 10000, 10 * time.Second, 5000, 1500},
		{"under budget nothing is shed", 1.5, 10000, 10 * time.Second, 1000, 1000},
		{"disabled", 0, 10000, 10 * time.Second, 5000, 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newShedder(tt.factor, tt.interval, func() int { return tt.hosts })
			got := 0
			for range tt.sent {
				ok, wait := s.allow(t0)
				if ok {
					got++
					continue
				}
				if wait < time.Second || wait > tt.interval {
					t.Fatalf("Retry-After %s, want within [1s, %s]", wait, tt.interval)
				}
			}
			if got != tt.want {
				t.Errorf("passed %d of %d, want %d", got, tt.sent, tt.want)
			}
		})
	}
}

func TestShedderRefills(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	s := newShedder(1, time.Second, func() int { return 1000 }) // 1000/s
	for range 1000 {
		s.allow(t0)
	}
	if ok, _ := s.allow(t0); ok {
		t.Fatal("request past the budget allowed, want shed")
	}
	got := 0
	for range 1000 {
		if ok, _ := s.allow(t0.Add(100 * time.Millisecond)); ok {
			got++
		}
	}
	if got != 100 {
		t.Errorf("after 100ms %d requests passed, want 100", got)
	}
}
