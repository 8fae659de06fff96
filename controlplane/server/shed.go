package server

import (
	"math/rand/v2"
	"sync"
	"time"
)

// shedder is the control plane's global request budget for agent traffic
// (heartbeats and registrations). The budget follows the fleet: factor ×
// hosts ÷ interval requests per second, never below a floor, with one
// second's worth of burst. Above it requests get 429 with a Retry-After
// spread over one interval, so a fleet returning at once (after an outage)
// is turned into a steady trickle instead of a wave.
type shedder struct {
	factor   float64
	floor    float64
	interval time.Duration
	hosts    func() int

	mu       sync.Mutex
	tokens   float64
	refilled time.Time
}

// shedFloor is the smallest budget in requests per second: small fleets are
// never shed.
const shedFloor = 200

func newShedder(factor float64, interval time.Duration, hosts func() int) *shedder {
	if factor <= 0 {
		return nil
	}
	return &shedder{factor: factor, floor: shedFloor, interval: interval, hosts: hosts}
}

// rate is the budget in requests per second.
func (s *shedder) rate() float64 {
	return max(s.floor, s.factor*float64(s.hosts())/s.interval.Seconds())
}

// allow takes one request from the budget. When the budget is spent it
// returns false and how long the caller should wait: a random whole number
// of seconds in [1, interval], so that refused agents come back spread out.
func (s *shedder) allow(now time.Time) (bool, time.Duration) {
	if s == nil {
		return true, 0
	}
	rate := s.rate()
	s.mu.Lock()
	if s.refilled.IsZero() {
		s.tokens, s.refilled = rate, now
	}
	if now.After(s.refilled) {
		s.tokens = min(rate, s.tokens+now.Sub(s.refilled).Seconds()*rate)
		s.refilled = now
	}
	ok := s.tokens >= 1
	if ok {
		s.tokens--
	}
	s.mu.Unlock()
	if ok {
		return true, 0
	}
	secs := max(1, int64(s.interval/time.Second))
	return false, time.Duration(1+rand.Int64N(secs)) * time.Second
}
