package dashboard

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Throttle keeps token buckets of failed logins (store.Throttle is one,
// shared by every replica).
type Throttle interface {
	// Throttled reports how long until every bucket has a token (0: now).
	Throttled(ctx context.Context, buckets []store.Bucket, now time.Time) (time.Duration, error)
	// Charge takes a token from every bucket.
	Charge(ctx context.Context, buckets []store.Bucket, now time.Time) error
}

// Default failed-login buckets: see Options.
var (
	DefaultPerAddress = store.Bucket{Burst: 10, PerMinute: 1}
	DefaultPerAccount = store.Bucket{Burst: 1000, PerMinute: 100}
)

func (d *Dashboard) initThrottle() {
	if d.o.Throttle == nil {
		d.o.Throttle = &memThrottle{b: map[string]memBucket{}}
	}
	if d.o.PerAddress.Burst < 1 || d.o.PerAddress.PerMinute <= 0 {
		d.o.PerAddress = DefaultPerAddress
	}
	if d.o.PerAccount.Burst < 1 || d.o.PerAccount.PerMinute <= 0 {
		d.o.PerAccount = DefaultPerAccount
	}
}

// buckets are the failed-login buckets a login from r draws on: its
// source address (an IPv6 client by its /64) and the admin account.
func (d *Dashboard) buckets(r *http.Request) []store.Bucket {
	addr, pa := clientAddr(r), d.o.PerAddress
	pa.Key = "login:addr:" + addr
	acct := d.o.PerAccount
	acct.Key = "login:account:admin"
	return []store.Bucket{pa, acct}
}

// clientAddr is the request's source address as the connection sees it
// (no forwarding header is trusted), an IPv6 address cut to its /64.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}

// memThrottle keeps the buckets in this process (no shared store).
type memThrottle struct {
	mu sync.Mutex
	b  map[string]memBucket
}

type memBucket struct {
	tokens float64
	at     time.Time
}

func (m *memThrottle) level(b store.Bucket, now time.Time) float64 {
	cur, ok := m.b[b.Key]
	if !ok {
		return b.Burst
	}
	return min(b.Burst, cur.tokens+now.Sub(cur.at).Minutes()*b.PerMinute)
}

func (m *memThrottle) Throttled(_ context.Context, buckets []store.Bucket, now time.Time) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var wait time.Duration
	for _, b := range buckets {
		if t := m.level(b, now); t < 1 {
			wait = max(wait, time.Duration((1-t)/b.PerMinute*float64(time.Minute)))
		}
	}
	return wait, nil
}

func (m *memThrottle) Charge(_ context.Context, buckets []store.Bucket, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, b := range buckets {
		m.b[b.Key] = memBucket{tokens: m.level(b, now) - 1, at: now}
	}
	for k, v := range m.b { // full again after a day
		if now.Sub(v.at) > 24*time.Hour {
			delete(m.b, k)
		}
	}
	return nil
}
