//go:build unix

package daemon

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
)

// TestHostAddrFromIMDS: ${PRIVATE_IP} is the instance's local-ipv4 over
// IMDSv2; without IMDS the error says how to run off EC2.
func TestHostAddrFromIMDS(t *testing.T) {
	md := imdstest.New(t, imdstest.Instance{PrivateIP: "10.0.7.42"})
	log := slog.New(slog.DiscardHandler)
	cfg := &config.Config{Identity: config.Identity{IMDSEndpoint: md.URL}}
	got, err := hostAddr(cfg, log)(context.Background(), config.HostPrivateIP)
	if err != nil || got != "10.0.7.42" {
		t.Errorf("${PRIVATE_IP} = %q, %v; want 10.0.7.42", got, err)
	}
	if _, err := hostAddr(cfg, log)(context.Background(), "PUBLIC_IP"); err == nil || !strings.Contains(err.Error(), "unknown host address variable ${PUBLIC_IP}") {
		t.Errorf("unknown variable: %v", err)
	}
	down := &config.Config{Identity: config.Identity{IMDSEndpoint: "http://127.0.0.1:1"}}
	if _, err := hostAddr(down, log)(context.Background(), config.HostPrivateIP); err == nil || !strings.Contains(err.Error(), "override the unit's ports") {
		t.Errorf("without IMDS: %v, want an error saying how to run off EC2", err)
	}
}
