package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/server"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// rolloutOpts are serve's flags for rollouts, events and webhooks.
type rolloutOpts struct {
	webhooks          string
	canary, batchPct  int
	bake, waveTimeout time.Duration
	tunnelWindow      time.Duration
	webhookMaxBackoff time.Duration
	secureCookie      bool
	eventBudget       int
	eventMaxRows      int
	eventMaxAge       time.Duration
	eventCoalesce     time.Duration
}

func (o *rolloutOpts) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.webhooks, "webhooks", "", "JSON file of webhooks (name, url, kinds, secret_file); none: no webhooks")
	f.IntVar(&o.canary, "rollout-canary", rollout.DefaultCanary, "hosts in a rollout's canary wave")
	f.IntVar(&o.batchPct, "rollout-batch-percent", rollout.DefaultBatchPercent, "share of a channel's hosts in each later wave")
	f.DurationVar(&o.bake, "rollout-bake", rollout.DefaultBake, "how long a wave stays ready before the next starts")
	f.DurationVar(&o.waveTimeout, "rollout-wave-timeout", rollout.DefaultWaveTimeout, "how long a wave may take to become ready before the rollout halts")
	f.DurationVar(&o.tunnelWindow, "tunnel-window", 2*time.Minute, "how long a tunnel may have no ready connection before a tunnel_not_ready event")
	f.DurationVar(&o.webhookMaxBackoff, "webhook-max-backoff", 5*time.Minute, "longest wait between webhook delivery attempts")
	f.BoolVar(&o.secureCookie, "dashboard-secure-cookie", false, "mark the dashboard session cookie Secure (when served behind TLS)")
	d := store.DefaultEventPolicy
	f.IntVar(&o.eventBudget, "event-host-budget", d.HostBudget, "events one host may add per minute; more are counted in one events_suppressed event")
	f.IntVar(&o.eventMaxRows, "event-max-rows", d.MaxRows, "events kept at most; the oldest are trimmed in the background")
	f.DurationVar(&o.eventMaxAge, "event-max-age", d.MaxAge, "events older than this are trimmed in the background")
	f.DurationVar(&o.eventCoalesce, "event-coalesce-window", d.CoalesceWindow, "a repeat of a host's event (same kind and unit) within this window bumps its count instead of adding a row")
}

// config fills the server's rollout, event and dashboard configs, reading
// the webhooks file (whose secrets sit in their own files).
func (o *rolloutOpts) config(c *server.Config) error {
	c.Rollouts = server.RolloutsConfig{Defaults: rollout.Policy{Canary: o.canary, BatchPercent: o.batchPct,
		BakeMS: o.bake.Milliseconds(), WaveTimeoutMS: o.waveTimeout.Milliseconds()}}
	c.Events = server.EventsConfig{TunnelWindow: o.tunnelWindow, Webhook: events.Dispatcher{MaxBackoff: o.webhookMaxBackoff},
		Policy: store.EventPolicy{HostBudget: o.eventBudget, MaxRows: o.eventMaxRows, MaxAge: o.eventMaxAge,
			CoalesceWindow: o.eventCoalesce}}
	if o.eventBudget < 1 || o.eventMaxRows < 1 || o.eventMaxAge <= 0 || o.eventCoalesce <= 0 {
		return fmt.Errorf("--event-*: budget, rows, age and window must be positive")
	}
	c.Dashboard = server.DashboardConfig{SecureCookie: o.secureCookie}
	if err := c.Rollouts.Defaults.Validate(); err != nil {
		return fmt.Errorf("--rollout-*: %w", err)
	}
	if o.webhooks != "" {
		hooks, err := events.LoadHooks(o.webhooks)
		if err != nil {
			return err
		}
		c.Events.Hooks = hooks
	}
	return nil
}
