package sim

import (
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// sample is one heartbeat attempt: when it was sent, how long it took and
// the HTTP status (0: no answer).
type sample struct {
	at   time.Time
	lat  time.Duration
	code int
}

// recorder keeps every attempt of a simulation.
type recorder struct {
	mu sync.Mutex
	s  []sample
}

func (r *recorder) add(at time.Time, lat time.Duration, code int) {
	r.mu.Lock()
	r.s = append(r.s, sample{at, lat, code})
	r.mu.Unlock()
}

// between returns the attempts sent in [from, to), in time order.
func (r *recorder) between(from, to time.Time) []sample {
	r.mu.Lock()
	out := make([]sample, 0, len(r.s))
	for _, s := range r.s {
		if !s.at.Before(from) && s.at.Before(to) {
			out = append(out, s)
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// Window is what the fleet saw between two instants.
type Window struct {
	Seconds float64
	// Requests is every attempt the control plane answered (any status).
	Requests    int64
	Heartbeats  int64 // answered 200
	RateLimited int64 // answered 429
	Errors      int64 // other answers, and attempts with no answer
	PerSecond   float64
	P50, P99    time.Duration
}

// Window summarises the attempts sent in [from, to).
func (f *Fleet) Window(from, to time.Time) Window {
	ss := f.rec.between(from, to)
	w := Window{Seconds: to.Sub(from).Seconds()}
	lat := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		if s.code != 0 {
			w.Requests++
		}
		switch s.code {
		case http.StatusOK:
			w.Heartbeats++
			lat = append(lat, s.lat)
		case http.StatusTooManyRequests:
			w.RateLimited++
		default:
			w.Errors++
		}
	}
	if w.Seconds > 0 {
		w.PerSecond = float64(w.Heartbeats) / w.Seconds
	}
	w.P50, w.P99 = pct(lat, 50), pct(lat, 99)
	return w
}

// Peak returns the largest number of answered requests sent within any
// span of width that starts in [from, to), and the span's start.
func (f *Fleet) Peak(from, to time.Time, width time.Duration) (int, time.Time) {
	ss := f.rec.between(from, to.Add(width))
	var at []time.Time
	for _, s := range ss {
		if s.code != 0 {
			at = append(at, s.at)
		}
	}
	best, bestAt, j := 0, from, 0
	for i := range at {
		if !at[i].Before(to) {
			break
		}
		for j < len(at) && at[j].Before(at[i].Add(width)) {
			j++
		}
		if j-i > best {
			best, bestAt = j-i, at[i]
		}
	}
	return best, bestAt
}

// Count returns the answered requests sent in [from, to).
func (f *Fleet) Count(from, to time.Time) int {
	n := 0
	for _, s := range f.rec.between(from, to) {
		if s.code != 0 {
			n++
		}
	}
	return n
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}
