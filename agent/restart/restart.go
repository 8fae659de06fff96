//go:build unix

// Package restart decides whether and when a unit that exited runs again:
// exponential backoff with full jitter, a reset after a stable run, a budget
// of restarts per window, and exit codes that mean "do not restart".
//
// It is pure: no processes, no clocks. Callers pass the exit and now.
package restart

import (
	"fmt"
	"time"
)

// Mode is when a unit is restarted.
type Mode string

// Modes.
const (
	Always    Mode = "always"
	OnFailure Mode = "on-failure"
	Never     Mode = "never"
)

// Policy is a unit's restart policy.
type Policy struct {
	Mode         Mode
	InitialDelay time.Duration
	MaxDelay     time.Duration
	// StableAfter is how long a run must last to reset the backoff.
	StableAfter time.Duration
	// Budget is the number of restarts allowed within Window.
	Budget int
	Window time.Duration
	// NoRestart holds exit codes that end the unit for good.
	NoRestart []int
}

// Exit describes how a run ended.
type Exit struct {
	// Code is the exit status, or -1 when killed by a signal or never started.
	Code int
	// Signaled is set when a signal ended the process.
	Signaled bool
	// StartFailed is set when the workload could not be started at all.
	StartFailed bool
}

// Failure reports whether the exit counts as a failure.
func (e Exit) Failure() bool { return e.Code != 0 || e.Signaled || e.StartFailed }

// Verdict is what to do after an exit.
type Verdict int

// Verdicts.
const (
	// Restart after Decision.Delay.
	Restart Verdict = iota
	// Done: the unit ended as its policy allows; it stays stopped.
	Done
	// Failed: the unit ran out of budget or hit a permanent exit code.
	Failed
)

// Decision is the result of Tracker.Next.
type Decision struct {
	Verdict Verdict
	// Delay is how long to wait before the restart.
	Delay time.Duration
	// Ceiling is the backoff ceiling the delay was drawn under.
	Ceiling time.Duration
	// Reason says why, for status and logs.
	Reason string
}

// Tracker applies a Policy to a unit's successive exits.
type Tracker struct {
	p        Policy
	attempt  int
	restarts []time.Time
}

// NewTracker returns a tracker for p.
func NewTracker(p Policy) *Tracker { return &Tracker{p: p} }

// Attempt is the number of consecutive quick restarts so far.
func (t *Tracker) Attempt() int { return t.attempt }

// Next decides what follows an exit of a run that started at startedAt.
// rnd returns a number in [0, 1) and draws the jitter.
func (t *Tracker) Next(e Exit, startedAt, now time.Time, rnd func() float64) Decision {
	for _, c := range t.p.NoRestart {
		if !e.Signaled && !e.StartFailed && e.Code == c {
			return Decision{Verdict: Failed, Reason: fmt.Sprintf("exit code %d means do not restart", c)}
		}
	}
	switch {
	case t.p.Mode == Never:
		return Decision{Verdict: Done, Reason: "restart policy is never"}
	case t.p.Mode == OnFailure && !e.Failure():
		return Decision{Verdict: Done, Reason: "exited successfully"}
	}
	if !startedAt.IsZero() && now.Sub(startedAt) >= t.p.StableAfter {
		t.attempt = 0
	}
	cut := now.Add(-t.p.Window)
	kept := t.restarts[:0]
	for _, r := range t.restarts {
		if r.After(cut) {
			kept = append(kept, r)
		}
	}
	t.restarts = kept
	if t.p.Budget > 0 && len(t.restarts) >= t.p.Budget {
		return Decision{Verdict: Failed, Reason: fmt.Sprintf("restarted %d times within %s; giving up", len(t.restarts), t.p.Window)}
	}
	ceiling := t.ceiling()
	t.attempt++
	t.restarts = append(t.restarts, now)
	delay := time.Duration(rnd() * float64(ceiling))
	return Decision{Verdict: Restart, Delay: delay, Ceiling: ceiling, Reason: "restarting"}
}

// ceiling is InitialDelay·2^attempt, capped at MaxDelay.
func (t *Tracker) ceiling() time.Duration {
	d := t.p.InitialDelay
	for i := 0; i < t.attempt && d < t.p.MaxDelay; i++ {
		d *= 2
	}
	return min(d, t.p.MaxDelay)
}
