//go:build unix

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// docker is the Docker client the container units share, made on the
// first container unit.
type docker struct {
	cfg   *config.Config
	store *secretstore.Store

	once   sync.Once
	cli    *container.Client
	cliErr error
	agent  string
}

func (c *docker) client() (*container.Client, error) {
	c.once.Do(func() {
		c.cli, c.cliErr = container.NewClient()
		if c.cliErr == nil {
			c.agent, c.cliErr = container.LoadAgentID(c.cfg.StateDir)
		}
	})
	return c.cli, c.cliErr
}

// driver builds a kind: container unit's driver.
func (c *docker) driver(u config.Unit, log *slog.Logger) (*container.Driver, error) {
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
			return nil, fmt.Errorf("container.registry_auth needs a secrets source")
		}
		opts.Auth = container.SecretAuth(c.store.Get, name)
	}
	return container.New(opts, container.SpecFromUnit(u))
}

// updatableUnit is a container unit with what an image update needs.
type updatableUnit struct {
	name    string
	drv     *container.Driver
	prober  supervisor.Prober
	prepare func(context.Context) ([]string, error)
}

// updatable lists the container units, in config order.
func updatable(units []unitBuild) []updatableUnit {
	var out []updatableUnit
	for _, u := range units {
		if u.ctr != nil {
			out = append(out, updatableUnit{name: u.unit.Name, drv: u.ctr, prober: u.spec.Prober, prepare: u.spec.Prepare})
		}
	}
	return out
}

// updateLoop applies the control plane's desired images, one unit at a time,
// each through the supervisor so a replaced container is not taken for a
// crash. A failed update rolls back inside the driver and is reported in
// status and heartbeats; the revision counts as applied either way.
func updateLoop(sup *supervisor.Supervisor, units []updatableUnit, desired *Desired, log *slog.Logger) Background {
	return func(ctx context.Context) {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			applyImages(ctx, sup, units, desired.Get(), log)
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

func applyImages(ctx context.Context, sup *supervisor.Supervisor, units []updatableUnit, ds api.DesiredState, log *slog.Logger) {
	for _, name := range sup.Names() {
		i := slices.IndexFunc(units, func(u updatableUnit) bool { return u.name == name })
		image := ds.Images[name]
		if i < 0 || image == "" {
			continue
		}
		cu := units[i]
		if image == "" {
			continue
		}
		want, err := cu.drv.Wants(image)
		if err != nil {
			log.Error("desired image refused", "unit", name, "err", err)
			continue
		}
		if !want {
			continue
		}
		log.Info("updating unit", "unit", name, "to", image)
		err = sup.Replace(ctx, name, cu.drv.UpdateFunc(image, cu.prepare, cu.prober))
		switch {
		case err == nil:
			log.Info("update committed", "unit", name, "image", image)
		case errors.Is(err, supervisor.ErrNotRunning):
			log.Warn("update deferred: unit not running", "unit", name)
		default:
			log.Error("update failed", "unit", name, "image", image, "err", err)
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
