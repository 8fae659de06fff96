//go:build unix

package tunnel

import (
	"context"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// SetTunnelID records the tunnel the current cloudflared serves, for Report.
func (p *Probe) SetTunnelID(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tunnelID = id
}

// Report is the cloudflared unit's supervisor.Reporter: the tunnel ID (from
// the token, so the control plane can delete the tunnel), connector ID and
// connection count from the last /ready answer. None of it is secret.
func (p *Probe) Report(f *supervisor.Facets) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tunnelID == "" && p.last.ConnectorID == "" {
		return
	}
	f.Tunnel = &supervisor.TunnelFacet{ID: p.tunnelID, ConnectorID: p.last.ConnectorID,
		ReadyConnections: p.last.ReadyConnections}
}

// CheckToken wraps a cloudflared unit's Prepare (which resolves its
// environment, secrets included). Before each start it parses TUNNEL_TOKEN
// and records the tunnel ID on p. A malformed or missing token returns a
// *supervisor.BlockedError naming where (e.g. "<prefix>/tunnel-token"):
// the unit waits, without a restart loop, until the secret changes.
func CheckToken(where string, p *Probe, prepare func(context.Context) ([]string, error)) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		env, err := prepare(ctx)
		if err != nil {
			return nil, err
		}
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, TokenEnv+"="); ok {
				tok, err := CheckSecret(where, secretstore.New(v))
				if err != nil {
					return nil, &supervisor.BlockedError{Reason: err.Error()}
				}
				p.SetTunnelID(tok.TunnelID)
				return env, nil
			}
		}
		return nil, &supervisor.BlockedError{Reason: "cloudflared has no " + TokenEnv + " in its environment; set env " + TokenEnv + ": secret:" + DefaultSecretName}
	}
}

var (
	_ supervisor.Prober   = (*Probe)(nil)
	_ supervisor.Reporter = (*Probe)(nil).Report
)
