package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/google/uuid"
	"gopkg.in/yaml.v3"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/secrets"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// containerUnit is a container unit's driver with what an update needs.
type containerUnit struct {
	drv     *container.Driver
	prober  supervisor.Prober
	prepare func(context.Context) ([]string, error)
}

// containers builds the Docker drivers and applies the desired images.
type containers struct {
	cfg   *config.Config
	store *secrets.Store
	log   *slog.Logger

	once   sync.Once
	cli    *client.Client
	cliErr error
	agent  string
	units  map[string]*containerUnit
}

func (c *containers) client() (*client.Client, error) {
	c.once.Do(func() {
		c.cli, c.cliErr = container.NewClient()
		if c.cliErr == nil {
			c.agent, c.cliErr = agentID(c.cfg.StateDir)
		}
	})
	return c.cli, c.cliErr
}

// agentID is this installation's identity (state_dir/agent-id), stable
// across restarts so a restarted agent adopts its own containers.
func agentID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, "agent-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", fmt.Errorf("state_dir: %w", err)
	}
	id := uuid.NewString()
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("state_dir: %w", err)
	}
	return id, nil
}

// factory is the DriverFactory of kind: container.
func (c *containers) factory(u config.Unit, log *slog.Logger) (supervisor.Driver, error) {
	cli, err := c.client()
	if err != nil {
		return nil, err
	}
	opts := container.Options{Client: cli, Agent: c.agent, StateDir: c.cfg.StateDir, Log: log,
		UpdateWindow: c.cfg.Updates.Window.Duration}
	if name := u.Container.RegistryAuth; name != "" {
		opts.Auth = func(_ context.Context, image string) (registry.AuthConfig, error) {
			if c.store == nil {
				return registry.AuthConfig{}, fmt.Errorf("unit %s: registry_auth needs a secrets source", u.Name)
			}
			s, ok := c.store.Get(name)
			if !ok {
				return registry.AuthConfig{}, fmt.Errorf("unit %s: registry credentials %q missing from %s", u.Name, name, c.cfg.Secrets.Prefix)
			}
			host, err := container.RegistryHost(image)
			if err != nil {
				return registry.AuthConfig{}, err
			}
			return container.ParseAuth(s, host)
		}
	}
	return container.New(opts, container.SpecFromUnit(u))
}

// track remembers a container unit's finished spec for updates.
func (c *containers) track(name string, sp supervisor.Spec) {
	drv, ok := sp.Driver.(*container.Driver)
	if !ok {
		return
	}
	if c.units == nil {
		c.units = map[string]*containerUnit{}
	}
	c.units[name] = &containerUnit{drv: drv, prober: sp.Prober, prepare: sp.Prepare}
}

// updateLoop applies the control plane's desired images, one unit at a time,
// each through the supervisor so a replaced container is not taken for a
// crash. A failed update rolls back inside the driver and is reported in
// status and heartbeats; the revision counts as applied either way.
func (c *containers) updateLoop(d *Daemon, desired *Desired) Background {
	return func(ctx context.Context) {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			c.apply(ctx, d, desired.Get())
			desired.SetApplied(desired.Get().Revision)
			select {
			case <-ctx.Done():
				return
			case <-desired.Changed():
			case <-t.C: // a pull that failed is retried
			}
		}
	}
}

func (c *containers) apply(ctx context.Context, d *Daemon, ds api.DesiredState) {
	for _, name := range d.sup.Names() {
		cu, ok := c.units[name]
		image := ds.Images[name]
		if !ok || image == "" {
			continue
		}
		want, err := cu.drv.Wants(image)
		if err != nil {
			c.log.Error("desired image refused", "unit", name, "err", err)
			continue
		}
		if !want {
			continue
		}
		c.log.Info("updating unit", "unit", name, "to", image)
		err = d.sup.Replace(ctx, name, cu.drv.UpdateFunc(image, cu.prepare, cu.prober))
		switch {
		case err == nil:
			c.log.Info("update committed", "unit", name, "image", image)
		case errors.Is(err, supervisor.ErrNotRunning):
			c.log.Warn("update deferred: unit not running", "unit", name)
		default:
			c.log.Error("update failed", "unit", name, "image", image, "err", err)
		}
	}
}

// desiredFileLoop follows updates.desired_file: JSON or YAML
// {revision: N, images: {unit: repo@sha256:…}}, read when it changes.
func desiredFileLoop(path string, desired *Desired, log *slog.Logger) Background {
	return func(ctx context.Context) {
		var last time.Time
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			if fi, err := os.Stat(path); err == nil && !fi.ModTime().Equal(last) {
				last = fi.ModTime()
				ds, err := readDesired(path)
				if err != nil {
					log.Error("desired state file", "path", path, "err", err)
				} else {
					desired.set(ds)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
}

func readDesired(path string) (api.DesiredState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return api.DesiredState{}, err
	}
	var raw struct {
		Revision int64             `yaml:"revision"`
		Images   map[string]string `yaml:"images"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return api.DesiredState{}, fmt.Errorf("%s: %w", path, err)
	}
	for unit, img := range raw.Images {
		if !config.IsDigestPinned(img) {
			return api.DesiredState{}, fmt.Errorf("%s: images.%s: %q is not pinned by digest (use repo@sha256:<digest>)", path, unit, img)
		}
	}
	return api.DesiredState{Revision: raw.Revision, Images: raw.Images}, nil
}
