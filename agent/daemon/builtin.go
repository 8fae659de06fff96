//go:build unix

package daemon

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/tunnel"
)

// cloudflaredHook gives the cloudflared unit its /ready probe (ready with at
// least one edge connection; restarted only after a sustained not-ready
// window), its status facet (tunnel ID, connector, connections) and a token
// check before each start: a malformed token blocks the unit, no restart loop.
func cloudflaredHook(cfg *config.Config) SpecHook {
	return func(b *unitBuild) error {
		sp, u := &b.spec, b.unit
		if u.Ready == nil || u.Ready.HTTP == "" {
			return fmt.Errorf("builtin cloudflared needs ready.http pointing at its metrics /ready")
		}
		ru, err := url.Parse(u.Ready.HTTP)
		if err != nil {
			return fmt.Errorf("ready.http: %w", err)
		}
		port, err := strconv.Atoi(ru.Port())
		if err != nil || ru.Hostname() != "127.0.0.1" {
			return fmt.Errorf("ready.http %q: cloudflared's metrics must bind 127.0.0.1:<port>", u.Ready.HTTP)
		}
		p := tunnel.NewProbe(port, nil)
		sp.Prober = p
		sp.Reporters = append(sp.Reporters, p.Report)
		sp.NotReadyRestart = tunnel.DefaultNotReadyWindow
		where := "env " + tunnel.TokenEnv
		for _, ref := range u.SecretRefs() {
			where = ref
			if cfg.Secrets.Prefix != "" {
				where = cfg.Secrets.Prefix + "/" + ref
			}
		}
		sp.Prepare = tunnel.CheckToken(where, p, sp.Prepare)
		return nil
	}
}
