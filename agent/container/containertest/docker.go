//go:build unix

package containertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// Docker returns a client for the local engine (API version negotiated),
// closed at cleanup. It fails the test under CI=true when Docker is missing.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	testenv.RequireDocker(t)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// RunID returns a fresh identifier for one test's Docker objects, suitable
// as a label value and inside container and volume names.
func RunID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

// CleanupLabel removes, when the test ends, every container (forced),
// network and volume carrying label key=value, and every image reference
// pulled from registryHost (if not empty). Only objects the test labelled are
// touched, so other users of the engine are safe.
func CleanupLabel(t testing.TB, cli *client.Client, key, value, registryHost string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
		defer cancel()
		f := filters.NewArgs(filters.Arg("label", key+"="+value))
		cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
		if err != nil {
			t.Errorf("cleanup: list containers: %v", err)
		}
		for _, c := range cs {
			if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("cleanup: remove container %s: %v", c.ID, err)
			}
		}
		nets, err := cli.NetworkList(ctx, network.ListOptions{Filters: f})
		if err != nil {
			t.Errorf("cleanup: list networks: %v", err)
		}
		for _, n := range nets {
			if err := cli.NetworkRemove(ctx, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("cleanup: remove network %s: %v", n.Name, err)
			}
		}
		vols, err := cli.VolumeList(ctx, volume.ListOptions{Filters: f})
		if err != nil {
			t.Errorf("cleanup: list volumes: %v", err)
		}
		for _, v := range vols.Volumes {
			if err := cli.VolumeRemove(ctx, v.Name, true); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("cleanup: remove volume %s: %v", v.Name, err)
			}
		}
		if registryHost != "" {
			RemoveImages(ctx, t, cli, registryHost+"/")
		}
	})
}

// RemoveImages untags every image reference (tag or digest) that starts with
// prefix; an image whose last reference goes is deleted. References are
// removed one by one, never by forcing an image ID that others may share.
func RemoveImages(ctx context.Context, t testing.TB, cli *client.Client, prefix string) {
	t.Helper()
	imgs, err := cli.ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		t.Errorf("cleanup: list images: %v", err)
		return
	}
	for _, im := range imgs {
		for _, ref := range append(append([]string{}, im.RepoTags...), im.RepoDigests...) {
			if !strings.HasPrefix(ref, prefix) {
				continue
			}
			if _, err := cli.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
				t.Errorf("cleanup: remove image %s: %v", ref, err)
			}
		}
	}
}
