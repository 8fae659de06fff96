//go:build unix

package restart

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func policy() Policy {
	return Policy{Mode: Always, InitialDelay: 100 * time.Millisecond, MaxDelay: time.Second,
		StableAfter: time.Minute, Budget: 5, Window: 10 * time.Minute, NoRestart: []int{255}}
}

func top() float64  { return 0.999999 }
func zero() float64 { return 0 }

func TestBackoffGrowsToCap(t *testing.T) {
	p := policy()
	p.Budget = 0 // unlimited
	tr := NewTracker(p)
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	now := t0
	for i, w := range want {
		d := tr.Next(Exit{Code: 1}, now, now.Add(time.Second), top)
		if d.Verdict != Restart {
			t.Fatalf("run %d: verdict %v, want Restart", i, d.Verdict)
		}
		if d.Ceiling != w*time.Millisecond {
			t.Errorf("run %d: ceiling = %v, want %v", i, d.Ceiling, w*time.Millisecond)
		}
		if d.Delay > d.Ceiling || d.Delay < d.Ceiling*99/100 {
			t.Errorf("run %d: delay %v not drawn near the ceiling %v with rnd≈1", i, d.Delay, d.Ceiling)
		}
		now = now.Add(2 * time.Second)
	}
}

func TestFullJitterCanBeZero(t *testing.T) {
	tr := NewTracker(policy())
	if d := tr.Next(Exit{Code: 1}, t0, t0, zero); d.Delay != 0 {
		t.Errorf("delay = %v, want 0 with rnd=0 (full jitter)", d.Delay)
	}
}

func TestStableRunResetsBackoff(t *testing.T) {
	tr := NewTracker(policy())
	now := t0
	for range 3 {
		tr.Next(Exit{Code: 1}, now, now.Add(time.Second), top)
		now = now.Add(time.Second)
	}
	if tr.Attempt() != 3 {
		t.Fatalf("attempt = %d, want 3", tr.Attempt())
	}
	d := tr.Next(Exit{Code: 1}, now, now.Add(2*time.Minute), top)
	if d.Ceiling != 100*time.Millisecond {
		t.Errorf("after a stable run ceiling = %v, want the initial 100ms", d.Ceiling)
	}
}

func TestBudgetExhaustedFails(t *testing.T) {
	tr := NewTracker(policy())
	now := t0
	var d Decision
	for i := range 6 {
		d = tr.Next(Exit{Code: 1}, now, now.Add(time.Second), top)
		if i < 5 && d.Verdict != Restart {
			t.Fatalf("restart %d: verdict %v, want Restart", i, d.Verdict)
		}
		now = now.Add(2 * time.Second)
	}
	if d.Verdict != Failed {
		t.Fatalf("6th exit: verdict %v, want Failed", d.Verdict)
	}
	// Restarts age out of the window and the budget comes back.
	if d := tr.Next(Exit{Code: 1}, now, now.Add(11*time.Minute), top); d.Verdict != Restart {
		t.Errorf("after the window: verdict %v (%s), want Restart", d.Verdict, d.Reason)
	}
}

func TestVerdicts(t *testing.T) {
	tests := []struct {
		name string
		mode Mode
		exit Exit
		want Verdict
	}{
		{"always restarts a clean exit", Always, Exit{Code: 0}, Restart},
		{"always restarts a crash", Always, Exit{Code: 2}, Restart},
		{"on-failure stops after clean exit", OnFailure, Exit{Code: 0}, Done},
		{"on-failure restarts a crash", OnFailure, Exit{Code: 1}, Restart},
		{"on-failure restarts a signal", OnFailure, Exit{Code: -1, Signaled: true}, Restart},
		{"on-failure restarts a failed start", OnFailure, Exit{Code: -1, StartFailed: true}, Restart},
		{"never", Never, Exit{Code: 1}, Done},
		{"no-restart code", Always, Exit{Code: 255}, Failed},
		{"no-restart code wins over never", Never, Exit{Code: 255}, Failed},
		{"signal is not an exit code", Always, Exit{Code: 255, Signaled: true}, Restart},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy()
			p.Mode = tt.mode
			d := NewTracker(p).Next(tt.exit, t0, t0.Add(time.Second), zero)
			if d.Verdict != tt.want {
				t.Errorf("verdict = %v (%s), want %v", d.Verdict, d.Reason, tt.want)
			}
			if d.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}
