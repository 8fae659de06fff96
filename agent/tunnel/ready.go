//go:build unix

package tunnel

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// DefaultNotReadyWindow is how long cloudflared may stay without a single
// edge connection before it is restarted.
const DefaultNotReadyWindow = 2 * time.Minute

// maxReadyBody bounds what is read from /ready (its answer is ~90 bytes).
const maxReadyBody = 4 << 10

// ReadyState is cloudflared's answer to GET /ready, e.g.
// {"status":503,"readyConnections":0,"connectorId":"233540d7-…"}.
type ReadyState struct {
	// HTTPStatus is 200 with at least one edge connection, else 503.
	HTTPStatus int `json:"status"`
	// ReadyConnections counts registered edge connections (up to 4).
	ReadyConnections int `json:"readyConnections"`
	// ConnectorID identifies this cloudflared run; it changes on restart.
	ConnectorID string `json:"connectorId"`
}

// Detail describes the state for status output, e.g. "0 connections".
func (s ReadyState) Detail() string {
	if s.ReadyConnections == 1 {
		return "1 connection"
	}
	return strconv.Itoa(s.ReadyConnections) + " connections"
}

// Probe polls cloudflared's metrics server. It implements the supervisor's
// Prober: ready when /ready reports at least one connection. Safe for
// concurrent use; build it with NewProbe or as &Probe{URL: unit.Ready.HTTP}.
type Probe struct {
	// URL is the /ready endpoint, e.g. http://127.0.0.1:20241/ready.
	URL string
	// Client makes the requests; nil uses one without proxy or idle connections.
	Client *http.Client

	mu       sync.Mutex
	last     ReadyState
	tunnelID string
}

// NewProbe probes GET http://127.0.0.1:<port>/ready. A nil client uses one
// that keeps no idle connections and never uses a proxy.
func NewProbe(port int, client *http.Client) *Probe {
	addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	return &Probe{URL: "http://" + addr.String() + "/ready", Client: client}
}

// probeClient keeps no idle connections (polls are seconds apart) and never
// goes through a proxy: the metrics server is on loopback.
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil}}

// Ready implements the supervisor's Prober. An error means the metrics server
// did not answer or answered something that is not cloudflared's /ready;
// a 503 with 0 connections is a valid answer: not ready, no error.
func (p *Probe) Ready(ctx context.Context) (bool, string, error) {
	s, err := p.Fetch(ctx)
	if err != nil {
		return false, "metrics port not answering", err
	}
	return s.ReadyConnections > 0, s.Detail(), nil
}

// Fetch asks /ready once and remembers the answer for Last.
func (p *Probe) Fetch(ctx context.Context) (ReadyState, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return ReadyState{}, fmt.Errorf("cloudflared ready probe %s: %w", p.URL, err)
	}
	c := p.Client
	if c == nil {
		c = probeClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return ReadyState{}, fmt.Errorf("cloudflared ready probe: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxReadyBody))
	if err != nil {
		return ReadyState{}, fmt.Errorf("cloudflared ready probe %s: read answer: %w", p.URL, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return ReadyState{}, fmt.Errorf("cloudflared ready probe %s: HTTP %d; is something else listening on cloudflared's metrics port?", p.URL, resp.StatusCode)
	}
	var s ReadyState
	if err := json.Unmarshal(body, &s); err != nil || s.HTTPStatus != resp.StatusCode || s.ReadyConnections < 0 {
		return ReadyState{}, fmt.Errorf("cloudflared ready probe %s: HTTP %d without cloudflared's JSON answer; is something else listening on its metrics port?", p.URL, resp.StatusCode)
	}
	p.mu.Lock()
	p.last = s
	p.mu.Unlock()
	return s, nil
}

// Last returns the most recent answer (zero before the first).
func (p *Probe) Last() ReadyState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last
}

// ReadyConnections is the connection count of the last answer.
func (p *Probe) ReadyConnections() int { return p.Last().ReadyConnections }

// ConnectorID is the connector ID of the last answer.
func (p *Probe) ConnectorID() string { return p.Last().ConnectorID }

// NotReadyTracker decides when a running cloudflared has been without edge
// connections long enough to be restarted. One 503 is normal (connecting,
// a reconnect); only an unbroken run of not-ready observations lasting
// Window calls for a restart. It is a pure decision: callers pass now.
// Not safe for concurrent use; the unit's loop owns it.
type NotReadyTracker struct {
	// Window is how long not-ready must last; DefaultNotReadyWindow when 0.
	Window time.Duration

	since time.Time // start of the current not-ready run; zero while ready
}

// Observe records one probe result (a probe error counts as not ready) and
// reports whether cloudflared should be restarted now. After it says so, the
// tracker starts over, giving the next run a full window.
func (t *NotReadyTracker) Observe(ready bool, now time.Time) (restart bool) {
	if ready {
		t.since = time.Time{}
		return false
	}
	if t.since.IsZero() {
		t.since = now
		return false
	}
	if now.Sub(t.since) < t.window() {
		return false
	}
	t.since = time.Time{}
	return true
}

// NotReadyFor is how long the current not-ready run has lasted at now.
func (t *NotReadyTracker) NotReadyFor(now time.Time) time.Duration {
	if t.since.IsZero() {
		return 0
	}
	return now.Sub(t.since)
}

// Reset forgets the current run, e.g. when cloudflared was restarted for
// another reason.
func (t *NotReadyTracker) Reset() { t.since = time.Time{} }

func (t *NotReadyTracker) window() time.Duration {
	if t.Window <= 0 {
		return DefaultNotReadyWindow
	}
	return t.Window
}
