//go:build unix

package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// AuthFunc returns the credentials for pulling image; a zero AuthConfig
// means anonymous. It is called before every pull, so rotated credentials
// are picked up.
type AuthFunc func(ctx context.Context, image string) (AuthConfig, error)

// Options configure a Driver.
type Options struct {
	// Client talks to the engine; make it with NewClient.
	Client *Client
	// Agent identifies this agent installation (stable across restarts); it
	// scopes which containers the driver adopts. Required.
	Agent string
	// StateDir holds the unit's update state and journal. Required.
	StateDir string
	// NamePrefix starts container names (default "molecule-").
	NamePrefix string
	// Auth gives registry credentials for private images (nil: anonymous).
	Auth AuthFunc
	// UpdateWindow bounds the wait for a new version's readiness (default 60 s).
	UpdateWindow time.Duration
	// ProbeInterval is how often readiness is polled during an update
	// (default 250 ms).
	ProbeInterval time.Duration
	// HostAddr resolves a host address variable of the unit's ports
	// (config.HostPrivateIP) when the unit starts; nil refuses such ports.
	HostAddr func(ctx context.Context, name string) (string, error)
	// RunDir and Secret serve the unit's secret files: written under
	// RunDir/containers/<unit>, values from Secret (secretstore.Store.Get).
	RunDir string
	Secret func(name string) (secretstore.Secret, bool)
	Log    *slog.Logger
}

// Driver runs one container unit. It implements supervisor.Driver and
// supervisor.Reporter. Start and Update are serialised.
type Driver struct {
	opts      Options
	spec      Spec
	statePath string
	log       *slog.Logger

	op sync.Mutex // one Start/Update/Recover at a time

	mu     sync.Mutex // guards st, status and cur
	st     unitState
	status Status
	cur    string // ID of the container the unit runs now

	fileSums []string // digests of the secret files written; d.op held

	// hook, when set (tests), runs as each update step begins, after the
	// step is journalled; the crash tests hang there and SIGKILL the agent.
	hook func(step string)
}

var (
	_ supervisor.Driver   = (*Driver)(nil)
	_ supervisor.Reporter = (*Driver)(nil).Report
)

// New returns the driver of one unit, loading its update state.
func New(opts Options, spec Spec) (*Driver, error) {
	if opts.Client == nil || opts.Agent == "" || opts.StateDir == "" {
		return nil, errors.New("container driver needs a client, an agent ID and a state dir")
	}
	if spec.Unit == "" || spec.Image == "" {
		return nil, errors.New("container spec needs a unit name and an image")
	}
	if opts.NamePrefix == "" {
		opts.NamePrefix = "molecule-"
	}
	if opts.UpdateWindow <= 0 {
		opts.UpdateWindow = 60 * time.Second
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = 250 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		opts:      opts,
		spec:      spec,
		statePath: filepath.Join(opts.StateDir, "containers", spec.Unit+".json"),
		log:       opts.Log.With("unit", spec.Unit),
	}
	st, err := loadState(d.statePath)
	if err != nil {
		return nil, err
	}
	if st.ConfigImage != spec.Image {
		// The configuration names another image: it wins over older updates.
		st.ConfigImage, st.Current, st.Bad, st.BadReason = spec.Image, "", "", ""
	}
	d.st = st
	d.status = Status{Image: d.currentLocked()}
	if st.Bad != "" {
		d.status.Phase, d.status.To, d.status.Reason = PhaseRolledBack, st.Bad, st.BadReason
	}
	return d, nil
}

// currentLocked is the image the unit should run. d.mu must be held.
func (d *Driver) currentLocked() string {
	if d.st.Current != "" {
		return d.st.Current
	}
	return d.spec.Image
}

// CurrentImage is the image the unit runs (or will run at its next start).
func (d *Driver) CurrentImage() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.currentLocked()
}

// Start implements supervisor.Driver: it first settles an update that an
// earlier agent left unfinished, then adopts a running container of this
// unit whose spec hash matches, restarts a stopped matching one, or
// replaces whatever else there is with a new container.
func (d *Driver) Start(ctx context.Context, env []string) (supervisor.Instance, error) {
	d.op.Lock()
	defer d.op.Unlock()
	if err := d.resolvePorts(ctx); err != nil {
		return nil, err
	}
	if err := d.recoverLocked(ctx); err != nil {
		return nil, err
	}
	env, err := d.withSecretFiles(env)
	if err != nil {
		return nil, err
	}
	in, err := d.ensure(ctx, d.CurrentImage(), env)
	if err != nil {
		return nil, err
	}
	d.setCurrent(in.ContainerID())
	return in, nil
}

// ensure makes exactly one container of the unit run image with env and
// returns it watched. The replacement is created (and its image pulled)
// before other containers of the unit are removed, so a failed pull leaves
// the old container in place.
func (d *Driver) ensure(ctx context.Context, image string, env []string) (*Instance, error) {
	hash := d.hash(image, env)
	cs, err := d.list(ctx)
	if err != nil {
		return nil, err
	}
	var keep *containerSummary
	for i := range cs {
		c := &cs[i]
		if c.Labels[LabelSpecHash] == hash && (keep == nil || (c.State == "running" && keep.State != "running")) {
			keep = c
		}
	}
	id := ""
	if keep != nil {
		id = keep.ID
	} else if id, err = d.create(ctx, image, env, hash, ""); err != nil {
		return nil, err
	}
	for _, c := range cs {
		if c.ID == id {
			continue
		}
		d.log.Info("removing container whose spec changed", "container", short(c.ID), "image", c.Labels[LabelImage])
		if err := d.remove(ctx, c.ID, c.State == "running"); err != nil {
			return nil, err
		}
	}
	if keep != nil && keep.State == "running" {
		d.log.Info("adopted running container", "container", short(id), "image", image)
		return watch(d.opts.Client, id, image), nil
	}
	if err := d.opts.Client.startContainer(ctx, id); err != nil {
		return nil, fmt.Errorf("start container %s of unit %s: %w", short(id), d.spec.Unit, err)
	}
	d.log.Info("container started", "container", short(id), "image", image)
	return watch(d.opts.Client, id, image), nil
}

// list returns every container of this unit and agent, running or not.
func (d *Driver) list(ctx context.Context) ([]containerSummary, error) {
	cs, err := d.opts.Client.listContainers(ctx, LabelUnit+"="+d.spec.Unit, LabelAgent+"="+d.opts.Agent)
	if err != nil {
		return nil, fmt.Errorf("list containers of unit %s: %w", d.spec.Unit, err)
	}
	return cs, nil
}

// remove stops (if asked) and removes a container; its named volumes stay.
func (d *Driver) remove(ctx context.Context, id string, stop bool) error {
	if stop {
		if err := d.stop(ctx, id); err != nil {
			return err
		}
	}
	err := d.opts.Client.removeContainer(ctx, id)
	if err != nil && !IsNotFound(err) && !IsConflict(err) {
		return fmt.Errorf("remove container %s: %w", short(id), err)
	}
	return nil
}

// stop stops a container within the unit's grace, keeping it.
func (d *Driver) stop(ctx context.Context, id string) error {
	secs := int(d.spec.stopGrace().Round(time.Second) / time.Second)
	err := d.opts.Client.stopContainer(ctx, id, secs)
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", short(id), err)
	}
	return nil
}
