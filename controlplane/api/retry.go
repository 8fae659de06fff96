package api

import (
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// RetryPolicy is how an agent retries the control plane: within one call
// (the client's retries) and between calls (the heartbeat loop's backoff).
type RetryPolicy struct {
	// RetryMax is the number of retries within one call after its first
	// attempt; RetryWaitMin and RetryWaitMax bound the wait between them.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration
	// RequestTimeout bounds one call including its retries.
	RequestTimeout time.Duration
	// Loop bounds the heartbeat loop's delay after a failed call; once the
	// control plane has given an interval its Max is capped at it
	// (backoff.Policy.CappedAt).
	Loop backoff.Policy
}

// AgentRetry is the shipped agent's retry policy, defined here once: the
// client's defaults (New) and agent/heartbeat's defaults are taken from it,
// and the simulator (controlplane/sim) and the drills (controlplane/drills)
// use it by name, so the figures they report describe the client that runs.
var AgentRetry = RetryPolicy{
	RetryMax: 3, RetryWaitMin: 250 * time.Millisecond, RetryWaitMax: 10 * time.Second,
	RequestTimeout: 30 * time.Second,
	Loop:           backoff.Policy{Min: time.Second, Max: time.Minute},
}

// Apply sets o's retry fields from p and returns o.
func (p RetryPolicy) Apply(o Options) Options {
	o.RetryMax, o.RetryWaitMin, o.RetryWaitMax, o.RequestTimeout = p.RetryMax, p.RetryWaitMin, p.RetryWaitMax, p.RequestTimeout
	return o
}

// DefaultInterval is the heartbeat interval a control plane gives agents
// unless configured otherwise, the time scale AgentRetry is written for.
const DefaultInterval = 10 * time.Second

// Scale returns p on a clock f times as fast or slow: every wait
// multiplied by f (never below a millisecond), the request timeout kept (a
// control plane slowed by load must not look like a lost reply). A drill at
// a tenth of the real interval runs AgentRetry.Scale(0.1): the same agent,
// ten times faster.
func (p RetryPolicy) Scale(f float64) RetryPolicy {
	sc := func(d time.Duration) time.Duration { return max(time.Duration(float64(d)*f), time.Millisecond) }
	p.RetryWaitMin, p.RetryWaitMax = sc(p.RetryWaitMin), sc(p.RetryWaitMax)
	p.Loop.Min, p.Loop.Max = sc(p.Loop.Min), sc(p.Loop.Max)
	return p
}

// For returns p at the time scale of a heartbeat interval.
func (p RetryPolicy) For(interval time.Duration) RetryPolicy {
	if interval <= 0 || interval == DefaultInterval {
		return p
	}
	return p.Scale(float64(interval) / float64(DefaultInterval))
}
