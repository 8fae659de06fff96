//go:build unix

package containertest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestAppsHaveDistinctDigests(t *testing.T) {
	r := NewRegistry(t)
	apps := r.PushApps(t)
	seen := map[string]bool{}
	for _, ref := range []string{apps.V1, apps.V2, apps.V3} {
		if !strings.HasPrefix(ref, r.Host+"/test/app@sha256:") {
			t.Errorf("ref = %q, want %s/test/app@sha256:…", ref, r.Host)
		}
		if seen[ref] {
			t.Errorf("digest %s repeated", ref)
		}
		seen[ref] = true
	}
}

func pull(ctx context.Context, t *testing.T, r *Registry, ref string, auth *registry.AuthConfig) error {
	t.Helper()
	cli := Docker(t)
	opts := image.PullOptions{}
	if auth != nil {
		b, _ := json.Marshal(auth)
		opts.RegistryAuth = base64.URLEncoding.EncodeToString(b)
	}
	rc, err := cli.ImagePull(ctx, ref, opts)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if strings.Contains(string(b), `"error"`) {
		return &pullError{string(b)}
	}
	return nil
}

type pullError struct{ msg string }

func (e *pullError) Error() string { return e.msg }

func TestDockerPullsFromLocalRegistry(t *testing.T) {
	cli := Docker(t)
	r := NewRegistry(t, WithBasicAuth("bot", "s3cret"))
	CleanupLabel(t, cli, "ai.molecule.test-run", RunID(), r.Host)
	apps := r.PushApps(t)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()

	if err := pull(ctx, t, r, apps.V1, nil); err == nil {
		t.Fatalf("pull without credentials succeeded, want an auth error")
	}
	if err := pull(ctx, t, r, apps.V1, &registry.AuthConfig{Username: "bot", Password: "s3cret", ServerAddress: r.Host}); err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	ins, err := cli.ImageInspect(ctx, apps.V1)
	if err != nil {
		t.Fatalf("inspect pulled image: %v", err)
	}
	if got := ins.Config.Labels["org.opencontainers.image.version"]; got != "v1" {
		t.Errorf("version label = %q, want v1", got)
	}
	if got := ins.Config.Entrypoint; len(got) != 1 || got[0] != "/app" {
		t.Errorf("entrypoint = %v, want [/app]", got)
	}
}
