//go:build unix

// Package containertest builds small OCI images in Go from a static test
// binary (testserver), serves them from an in-process registry on 127.0.0.1
// and cleans up what tests leave in the Docker engine. Docker treats
// 127.0.0.0/8 registries as insecure, so the registry speaks plain HTTP.
package containertest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestServerPackage is the import path of the binary baked into test images.
const TestServerPackage = "github.com/molecule-ai/molecule-agent/agent/container/containertest/testserver"

// AppPort is the port testserver listens on inside the image.
const AppPort = "8080/tcp"

// DataDir is where testserver keeps data.txt inside the image; mount a
// volume here to prove data survives a container's replacement.
const DataDir = "/data"

var build struct {
	once sync.Once
	bin  []byte
	err  error
}

// TestServerBinary builds testserver once per test process as a static
// binary (CGO_ENABLED=0) and returns its bytes.
func TestServerBinary(t testing.TB) []byte {
	t.Helper()
	goBin := testenv.RequireBinary(t, "go")
	build.once.Do(func() {
		dir, err := os.MkdirTemp("", "containertest-build-")
		if err != nil {
			build.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "app")
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags=-s -w", "-o", out, TestServerPackage)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if msg, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("build %s: %w\n%s", TestServerPackage, err, msg)
			return
		}
		build.bin, build.err = os.ReadFile(out)
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bin
}

// Variant describes one test image: the version it reports and whether it
// ever becomes ready.
type Variant struct {
	Version    string
	NeverReady bool
}

// AppImage returns a single-layer image holding testserver as /app, with the
// variant baked into its config environment.
func AppImage(t testing.TB, v Variant) v1.Image {
	t.Helper()
	layer, err := binaryLayer(TestServerBinary(t))
	if err != nil {
		t.Fatalf("test image layer: %v", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatalf("append layer: %v", err)
	}
	env := []string{"APP_VERSION=" + v.Version, "APP_ADDR=:8080", "APP_DATA_DIR=" + DataDir}
	if v.NeverReady {
		env = append(env, "APP_NEVER_READY=1")
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Config: v1.Config{
			Entrypoint:   []string{"/app"},
			Env:          env,
			ExposedPorts: map[string]struct{}{AppPort: {}},
			Labels:       map[string]string{"org.opencontainers.image.version": v.Version},
		},
		RootFS: mustRootFS(t, img),
	})
	if err != nil {
		t.Fatalf("image config: %v", err)
	}
	return img
}

func mustRootFS(t testing.TB, img v1.Image) v1.RootFS {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config file: %v", err)
	}
	return cf.RootFS
}

// binaryLayer is an uncompressed tar holding bin as /app (0755), gzipped by
// tarball.
func binaryLayer(bin []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "app", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}
