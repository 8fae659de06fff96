package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/docker/docker/client"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
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
	store *secretstore.Store
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
			c.agent, c.cliErr = container.LoadAgentID(c.cfg.StateDir)
		}
	})
	return c.cli, c.cliErr
}

// factory is the DriverFactory of kind: container.
func (c *containers) factory(u config.Unit, log *slog.Logger) (supervisor.Driver, error) {
	cli, err := c.client()
	if err != nil {
		return nil, err
	}
	opts := container.Options{Client: cli, Agent: c.agent, StateDir: c.cfg.StateDir, Log: log,
		UpdateWindow: c.cfg.Updates.Window.Duration, HostAddr: hostAddr(c.cfg, log), RunDir: c.cfg.RunDir}
	if c.store != nil {
		opts.Secret = c.store.Get
	}
	if name := u.Container.RegistryAuth; name != "" {
		if c.store == nil {
			return nil, fmt.Errorf("unit %s: container.registry_auth needs a secrets source", u.Name)
		}
		opts.Auth = container.SecretAuth(c.store.Get, name)
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

// desiredFileLoop follows updates.desired_file, a JSON object of unit →
// digest-pinned image, read again whenever it changes.
func desiredFileLoop(path string, desired *Desired, log *slog.Logger) Background {
	return func(ctx context.Context) {
		var last time.Time
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			if fi, err := os.Stat(path); err == nil && !fi.ModTime().Equal(last) {
				last = fi.ModTime()
				images, err := container.ReadDesired(path)
				if err != nil {
					log.Error("desired state file", "path", path, "err", err)
				} else {
					desired.set(api.DesiredState{Revision: last.UnixNano(), Images: images})
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
