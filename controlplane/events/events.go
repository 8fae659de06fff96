// Package events names the control plane's event kinds, derives the events
// a host's heartbeats imply (unit failed, update committed or rolled back,
// tunnel not ready for too long), serves them as a paged feed, and delivers
// them to webhooks signed with HMAC-SHA256, retried with backoff, every
// attempt recorded.
package events

import (
	"strings"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Event kinds. Registered, online, offline and removed (deprovisioned) are
// recorded by the server; the rest by this package and the rollouts.
const (
	KindRegistered        = "registered"
	KindOnline            = "online"
	KindOffline           = "offline"
	KindDeprovisioned     = "removed"
	KindTunnelNotReady    = "tunnel_not_ready"
	KindUnitFailed        = "unit_failed"
	KindUpdateCommitted   = "update_committed"
	KindUpdateRolledBack  = "update_rolled_back"
	KindRolloutStarted    = "rollout_started"
	KindRolloutHalted     = "rollout_halted"
	KindRolloutCompleted  = "rollout_completed"
	KindRolloutRolledBack = "rollout_rolled_back"
	// KindRegisterRefused audits a refused registration of a known host
	// (another org's proof, a used-up enrollment token, a stale token).
	KindRegisterRefused = store.EventRegisterRefused
	// KindTunnelMismatch: a host reported a tunnel other than its org's.
	KindTunnelMismatch = store.EventTunnelMismatch
	// KindEventsSuppressed counts a host's events dropped over its budget.
	KindEventsSuppressed = store.EventSuppressed
)

// Kinds lists every event kind.
var Kinds = []string{KindRegistered, KindOnline, KindOffline, KindDeprovisioned, KindTunnelNotReady, KindUnitFailed,
	KindUpdateCommitted, KindUpdateRolledBack, KindRolloutStarted, KindRolloutHalted, KindRolloutCompleted, KindRolloutRolledBack,
	KindRegisterRefused, KindTunnelMismatch, KindEventsSuppressed}

// Event is an event as the feed serves it and webhooks receive it (the
// wire type api.FeedEvent).
type Event = api.FeedEvent

// Page is the reply to GET /v1/events?since=&limit= (api.EventPage).
type Page = api.EventPage

// FromStore converts a stored event.
func FromStore(e store.Event) Event {
	out := Event{ID: e.ID, Kind: e.Type, HostID: e.HostID, Detail: e.Detail, At: e.At.UTC()}
	if e.Count > 1 {
		out.Count, out.LastAt = e.Count, e.LastAt.UTC()
	}
	if e.Type == KindDeprovisioned {
		// The store records the tunnel as "tunnel <id>".
		if id, ok := strings.CutPrefix(e.Detail, "tunnel "); ok {
			out.TunnelID = strings.TrimSpace(id)
		}
	}
	return out
}

// NewPage builds a page from stored events fetched after since.
func NewPage(evs []store.Event, since int64) Page {
	p := Page{Events: make([]Event, 0, len(evs)), Next: since}
	for _, e := range evs {
		p.Events = append(p.Events, FromStore(e))
		p.Next = e.ID
	}
	return p
}
