package server

import (
	"context"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// PathDashboard is where the dashboard is served.
const PathDashboard = "/dashboard"

// DashboardConfig configures the dashboard.
type DashboardConfig struct {
	// SecureCookie marks the dashboard session cookie Secure (behind TLS).
	SecureCookie bool
}

func (s *Server) initDashboard() {
	s.dash = dashboard.New(dashboard.Options{
		Source: dashSource{s}, AdminToken: s.cfg.AdminToken, Logger: s.log.With("component", "dashboard"),
		Now: s.cfg.Now, SecureCookie: s.cfg.Dashboard.SecureCookie, Refresh: 5 * time.Second, Throttle: s.store,
	})
}

// dashSource gives the dashboard the server's view, secrets excluded
// (api.Host and the events carry none).
type dashSource struct{ s *Server }

func (d dashSource) Hosts(ctx context.Context) ([]api.Host, error) {
	hosts, err := d.s.store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, d.s.apiHost(h))
	}
	return out, nil
}

func (d dashSource) Rollouts(context.Context) ([]rollout.Rollout, error) {
	return d.s.rollouts.List(), nil
}

func (d dashSource) Events(ctx context.Context, limit int) ([]events.Event, error) {
	evs, err := d.s.store.Events(ctx, "", limit)
	if err != nil {
		return nil, err
	}
	out := make([]events.Event, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- { // newest first
		out = append(out, events.FromStore(evs[i]))
	}
	return out, nil
}
