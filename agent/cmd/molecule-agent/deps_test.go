//go:build unix

package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent binary must never link control-plane-only dependencies (SQL
// drivers, migrations, the server) nor cloudflared's packages (+21 MB), nor
// what the README's "Performance" section cut from it: the docker/docker and
// moby client modules (with OpenTelemetry), and the AWS SDK's config loader
// with its SSO, STS and sign-in clients (a host reads SSM with the instance
// role).
func TestAgentLinksNoControlPlaneOrCloudflaredPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps gave only %d packages", len(deps))
	}
	forbidden := []string{
		"modernc.org/sqlite", "github.com/jackc/pgx", "github.com/pressly/goose",
		"github.com/cloudflare/", "github.com/prometheus/client_golang",
		"github.com/molecule-ai/molecule-agent/controlplane/store",
		"github.com/molecule-ai/molecule-agent/controlplane/server",
		"github.com/molecule-ai/molecule-agent/controlplane/attest",
		"github.com/docker/docker", "github.com/moby/moby", "go.opentelemetry.io/",
		"github.com/aws/aws-sdk-go-v2/config", "github.com/aws/aws-sdk-go-v2/service/sso",
		"github.com/aws/aws-sdk-go-v2/service/sts", "github.com/aws/aws-sdk-go-v2/service/signin",
	}
	for _, d := range deps {
		if d == "database/sql" { // database/sql/driver is only uuid's Valuer interface
			t.Errorf("the agent links database/sql")
		}
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("the agent links %s", d)
			}
		}
		if strings.HasPrefix(d, "github.com/molecule-ai/molecule-agent/controlplane/") &&
			d != "github.com/molecule-ai/molecule-agent/controlplane/api" &&
			d != "github.com/molecule-ai/molecule-agent/controlplane/api/secret" &&
			d != "github.com/molecule-ai/molecule-agent/controlplane/api/backoff" {
			t.Errorf("the agent imports %s; only controlplane/api and its leaves (secret, backoff) are allowed", d)
		}
	}
}
