//go:build unix

package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// create makes (but does not start) the unit's container for image and env,
// pulling the image and creating volumes and the network when missing.
func (d *Driver) create(ctx context.Context, image string, env []string, hash, updateID string) (string, error) {
	if err := d.ensureImage(ctx, image); err != nil {
		return "", err
	}
	if err := d.ensureVolumes(ctx); err != nil {
		return "", err
	}
	if err := d.ensureNetwork(ctx); err != nil {
		return "", err
	}
	s := d.spec
	labels := map[string]string{
		LabelUnit: s.Unit, LabelAgent: d.opts.Agent, LabelSpecHash: hash, LabelImage: image,
	}
	if updateID != "" {
		labels[LabelUpdate] = updateID
	}
	grace := int(s.stopGrace().Seconds())
	cfg := &createRequest{
		Image:        image,
		Env:          env,
		Cmd:          s.Cmd,
		User:         s.User,
		Labels:       labels,
		StopSignal:   s.stopSignal(),
		StopTimeout:  &grace,
		ExposedPorts: map[string]struct{}{},
	}
	if h := s.Healthcheck; h != nil {
		cfg.Healthcheck = &healthConfig{
			Test: h.Test, Interval: h.Interval.Duration, Timeout: h.Timeout.Duration,
			StartPeriod: h.StartPeriod.Duration, Retries: h.Retries,
		}
	}
	host := &cfg.HostConfig
	host.PortBindings = map[string][]portBinding{}
	host.NetworkMode = s.Network
	// The agent supervises; Docker must not restart behind its back.
	host.RestartPolicy.Name = "no"
	host.LogConfig.Type = "json-file"
	host.LogConfig.Config = map[string]string{"max-size": "10m", "max-file": "3"}
	for _, v := range s.Volumes {
		host.Mounts = append(host.Mounts, mountSpec{Type: "volume", Source: v.Name, Target: v.Path, ReadOnly: v.ReadOnly})
	}
	host.Mounts = append(host.Mounts, d.secretMounts()...)
	for _, p := range s.Ports {
		port := strconv.Itoa(int(p.ContainerPort)) + "/" + p.Proto
		cfg.ExposedPorts[port] = struct{}{}
		host.PortBindings[port] = append(host.PortBindings[port], portBinding{HostIP: p.HostIP, HostPort: strconv.Itoa(int(p.HostPort))})
	}
	if userNetwork(s.Network) {
		cfg.NetworkingConfig = &struct{ EndpointsConfig map[string]endpointSettings }{
			EndpointsConfig: map[string]endpointSettings{s.Network: {Aliases: []string{s.Unit}}},
		}
	}
	name := d.opts.NamePrefix + s.Unit + "-" + hash[:12]
	id, warnings, err := d.opts.Client.createContainer(ctx, name, cfg)
	if IsConflict(err) {
		return "", fmt.Errorf("create container %s: the name is taken by a container without this agent's labels; remove or rename it: %w", name, err)
	}
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	for _, w := range warnings {
		d.log.Warn("docker create warning", "container", name, "warning", w)
	}
	return id, nil
}

func userNetwork(n string) bool {
	switch n {
	case "", "bridge", "host", "none", "default":
		return false
	}
	return true
}

func (d *Driver) ensureVolumes(ctx context.Context) error {
	for _, v := range d.spec.Volumes {
		err := d.opts.Client.volumeExists(ctx, v.Name)
		if err == nil {
			continue
		}
		if !IsNotFound(err) {
			return fmt.Errorf("inspect volume %s: %w", v.Name, err)
		}
		err = d.opts.Client.createVolume(ctx, v.Name, map[string]string{LabelUnit: d.spec.Unit, LabelAgent: d.opts.Agent})
		if err != nil {
			return fmt.Errorf("create volume %s: %w", v.Name, err)
		}
		d.log.Info("volume created", "volume", v.Name)
	}
	return nil
}

func (d *Driver) ensureNetwork(ctx context.Context) error {
	n := d.spec.Network
	if !userNetwork(n) {
		return nil
	}
	err := d.opts.Client.networkExists(ctx, n)
	if err == nil {
		return nil
	}
	if !IsNotFound(err) {
		return fmt.Errorf("inspect network %s: %w", n, err)
	}
	err = d.opts.Client.createNetwork(ctx, n, map[string]string{LabelAgent: d.opts.Agent})
	if err != nil && !IsConflict(err) {
		return fmt.Errorf("create network %s: %w", n, err)
	}
	return nil
}

// ensureImage pulls image unless the engine has it, reporting progress.
func (d *Driver) ensureImage(ctx context.Context, ref string) error {
	if err := d.opts.Client.imageExists(ctx, ref); err == nil {
		return nil
	} else if !IsNotFound(err) {
		return fmt.Errorf("inspect image %s: %w", ref, err)
	}
	var auth AuthConfig
	if d.opts.Auth != nil {
		a, err := d.opts.Auth(ctx, ref)
		if err != nil {
			return fmt.Errorf("registry credentials for %s: %w", ref, err)
		}
		auth = a
	}
	d.log.Info("pulling image", "image", ref)
	rc, err := d.opts.Client.pullImage(ctx, ref, auth)
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	if err := d.readPull(rc); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if err := d.opts.Client.imageExists(ctx, ref); err != nil {
		return fmt.Errorf("pull %s: image missing after pull: %w", ref, err)
	}
	return nil
}

// pullMessage is the part of Docker's pull progress stream we read.
type pullMessage struct {
	ID             string `json:"id"`
	Status         string `json:"status"`
	ProgressDetail struct {
		Current int64 `json:"current"`
		Total   int64 `json:"total"`
	} `json:"progressDetail"`
	Error string `json:"error"`
}

// readPull consumes the pull stream, updating the pull progress in Status.
func (d *Driver) readPull(r io.Reader) error {
	dec := json.NewDecoder(r)
	type layer struct{ cur, total int64 }
	layers := map[string]*layer{}
	for {
		var m pullMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
		if m.ID == "" || strings.HasPrefix(m.Status, "Pulling from ") {
			continue
		}
		l := layers[m.ID]
		if l == nil {
			l = &layer{}
			layers[m.ID] = l
		}
		switch m.Status {
		case "Downloading":
			l.cur, l.total = m.ProgressDetail.Current, m.ProgressDetail.Total
		case "Download complete", "Pull complete", "Already exists":
			if l.total > 0 {
				l.cur = l.total
			}
		}
		var p PullProgress
		for _, l := range layers {
			p.Layers++
			p.Current += l.cur
			p.Total += l.total
		}
		d.setPull(p)
	}
}
