package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// Detection is how fast the control plane noticed silenced hosts: from
// each host's last heartbeat (as the control plane recorded it, or as it
// was answered, whichever is later: a beat cut off by the kill may still
// have arrived) to its offline event.
type Detection struct {
	Killed, Detected int
	P50, P99, Max    time.Duration
}

// Detect polls the control plane's events until every silenced host has
// an offline event or timeout passes.
func (f *Fleet) Detect(ctx context.Context, killed []Silenced, timeout time.Duration) (Detection, error) {
	d := Detection{Killed: len(killed)}
	last := make(map[string]time.Time, len(killed))
	for _, k := range killed {
		last[k.HostID] = k.LastBeat
	}
	var lat []time.Duration
	deadline := time.Now().Add(timeout)
	for len(last) > 0 {
		evs, err := f.Events(ctx)
		if err != nil {
			return d, err
		}
		for _, e := range evs {
			lb, ok := last[e.HostID]
			if !ok || e.Type != api.EventOffline || e.At.Before(lb) {
				continue
			}
			if h, err := f.admin.GetHost(ctx, e.HostID); err == nil && h.LastSeen.After(lb) {
				lb = h.LastSeen
			}
			lat = append(lat, e.At.Sub(lb))
			delete(last, e.HostID)
		}
		if len(last) == 0 || time.Now().After(deadline) || !backoff.Wait(ctx, time.Second) {
			break
		}
	}
	d.Detected = len(lat)
	d.P50, d.P99, d.Max = pct(lat, 50), pct(lat, 99), pct(lat, 100)
	return d, ctx.Err()
}

// OfflineSince counts offline events at or after since for hosts not in
// except: hosts the control plane wrongly declared offline.
func (f *Fleet) OfflineSince(ctx context.Context, since time.Time, except []Silenced) (int, error) {
	skip := map[string]bool{}
	for _, k := range except {
		skip[k.HostID] = true
	}
	evs, err := f.Events(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range evs {
		if e.Type == api.EventOffline && !e.At.Before(since) && !skip[e.HostID] {
			n++
		}
	}
	return n, nil
}

// Events returns the control plane's latest 10,000 events.
func (f *Fleet) Events(ctx context.Context) ([]api.Event, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(f.cfg.URL, "/")+api.PathAdminEvents+"?limit=10000", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.cfg.AdminToken.Reveal())
	resp, err := f.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("list events: control plane answered %d", resp.StatusCode)
	}
	var out api.EventList
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return out.Events, nil
}
