//go:build unix

package container

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// Instance is one running container, watched until it exits. It implements
// supervisor.Instance.
type Instance struct {
	cli   *Client
	id    string
	image string

	done     chan struct{}
	exit     supervisor.ExitStatus
	cancel   context.CancelFunc
	detached chan struct{}
	wg       sync.WaitGroup
}

var _ supervisor.Instance = (*Instance)(nil)

// watch starts watching container id, which must be running.
func watch(cli *Client, id, image string) *Instance {
	ctx, cancel := context.WithCancel(context.Background())
	in := &Instance{cli: cli, id: id, image: image, done: make(chan struct{}), cancel: cancel, detached: make(chan struct{})}
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		in.wait(ctx)
	}()
	return in
}

// wait blocks until the container stops running (closing done) or ctx ends
// (Detach). A dropped engine connection is retried; a vanished container is
// an exit with an error.
func (in *Instance) wait(ctx context.Context) {
	retry := backoff.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for attempt := 1; ; attempt++ {
		r, err := in.cli.waitContainer(ctx, in.id)
		switch {
		case err == nil:
			in.exit = supervisor.ExitStatus{Code: int(r.StatusCode)}
			if r.Error != nil && r.Error.Message != "" {
				in.exit.Err = errors.New(r.Error.Message)
			}
			in.addOOM()
			close(in.done)
			return
		case ctx.Err() != nil:
			return
		case IsNotFound(err):
			in.exit = supervisor.ExitStatus{Code: -1, Err: fmt.Errorf("container %s vanished", short(in.id))}
			close(in.done)
			return
		}
		if !backoff.Wait(ctx, retry.Delay(attempt, 0)) {
			return
		}
	}
}

func (in *Instance) addOOM() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := in.cli.inspectContainer(ctx, in.id)
	if err == nil && st.State != nil && st.State.OOMKilled && in.exit.Err == nil {
		in.exit.Err = fmt.Errorf("killed for lack of memory (exit code %d)", in.exit.Code)
	}
}

// ID is the short container ID, as docker ps shows it.
func (in *Instance) ID() string { return short(in.id) }

// ContainerID is the full container ID.
func (in *Instance) ContainerID() string { return in.id }

// Image is the image reference the container was created from.
func (in *Instance) Image() string { return in.image }

// PID is 0: the workload is not a child of the agent.
func (in *Instance) PID() int { return 0 }

// Done is closed once the container has stopped running.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Exit reports the container's exit; valid after Done.
func (in *Instance) Exit() supervisor.ExitStatus { return in.exit }

// Stop asks Docker to stop the container with its stop signal, killing it
// after grace, and returns once it has stopped. The container is kept.
func (in *Instance) Stop(ctx context.Context, grace time.Duration) error {
	secs := int(math.Ceil(grace.Seconds()))
	err := in.cli.stopContainer(ctx, in.id, secs)
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", short(in.id), err)
	}
	select {
	case <-in.done:
		return nil
	case <-in.detached: // ContainerStop returns once it has stopped
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Detach stops watching the container and leaves it running, for an agent
// that exits without stopping its units; the next agent adopts it.
func (in *Instance) Detach() {
	in.cancel()
	in.wg.Wait()
	select {
	case <-in.detached:
	default:
		close(in.detached)
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
