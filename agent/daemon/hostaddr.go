//go:build unix

package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity"
)

// hostAddr resolves the host address variables of container ports when a
// unit starts: ${PRIVATE_IP} is the instance's private IPv4 from IMDS
// (local-ipv4), so a port is published there and on loopback, never on
// every address.
func hostAddr(cfg *config.Config, log *slog.Logger) func(context.Context, string) (string, error) {
	return func(ctx context.Context, name string) (string, error) {
		if name != config.HostPrivateIP {
			return "", fmt.Errorf("unknown host address variable ${%s}", name)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := identity.New(identity.Options{Endpoint: cfg.Identity.IMDSEndpoint, Logger: log}).Metadata(ctx, "local-ipv4")
		if err != nil {
			return "", fmt.Errorf("private address from IMDS local-ipv4: %w (off EC2, override the unit's ports in agent.yaml with an address)", err)
		}
		return strings.TrimSpace(v), nil
	}
}
