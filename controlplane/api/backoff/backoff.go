// Package backoff is the project's one retry delay: exponential backoff with
// jitter that honours a server's Retry-After, and a wait that ends with its
// context. The agent and the control plane both import it (it sits under
// controlplane/api, the contract both sides share), so a retry behaves the
// same wherever it happens.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy bounds the delay between attempts.
type Policy struct {
	// Min is the first ceiling; half of it is the shortest delay.
	Min time.Duration
	// Max caps the ceiling.
	Max time.Duration
}

// Delay returns the wait before retry number attempt (1-based): random
// between Min/2 and a ceiling that doubles from Min with each attempt,
// capped at Max. It is never less than retryAfter, the server's
// Retry-After, to which up to 10 % is added so that hosts told the same wait
// do not return in lockstep.
func (p Policy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	lo := max(p.Min, time.Millisecond)
	hi := max(p.Max, lo)
	ceil := hi
	if attempt >= 0 && attempt < 30 && lo<<attempt > 0 && lo<<attempt < hi {
		ceil = lo << attempt
	}
	d := lo/2 + rand.N(ceil-lo/2+1)
	if retryAfter > 0 {
		d = max(d, retryAfter+rand.N(retryAfter/10+1))
	}
	return d
}

// CappedAt returns p with Max lowered to d (never below Min) when d is
// positive and smaller: a heartbeat loop never retries less often than it
// beats, or a host would be judged offline after an outage longer than its
// offline window.
func (p Policy) CappedAt(d time.Duration) Policy {
	if d > 0 && d < p.Max {
		p.Max = max(d, p.Min)
	}
	return p
}

// Spread returns d moved randomly by up to ±frac of itself (frac ≤ 0: d).
func Spread(d time.Duration, frac float64) time.Duration {
	if frac <= 0 || d <= 0 {
		return d
	}
	return time.Duration(float64(d) * (1 + frac*(2*rand.Float64()-1)))
}

// Wait waits d or until ctx ends, reporting whether d elapsed.
func Wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
