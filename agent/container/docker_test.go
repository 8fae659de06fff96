//go:build unix

package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"
	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestUpdateCommitsHealthyVersion(t *testing.T) {
	r := newRig(t)
	d := r.driver(r.apps.V1)
	old := r.start(d, nil)
	r.waitBody("/version", "v1")
	if code, _, err := r.do("PUT", "/data", "written by v1"); err != nil || code != 204 {
		t.Fatalf("PUT /data = %d, %v; want 204", code, err)
	}

	// Record what Status shows as each step begins (the hook runs on the
	// updating goroutine; Status is what heartbeats read).
	seen := map[string]Status{}
	d.hook = func(step string) { seen[step] = d.Status() }
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	in, err := d.Update(ctx, old, r.apps.V2, staticEnv(), r.prober())
	if err != nil {
		t.Fatalf("Update v1→v2: %v", err)
	}
	for step, want := range map[string]Phase{stepPulling: PhasePulling, stepCreatingNew: PhaseStarting, stepStartingNew: PhaseStarting, stepWaiting: PhaseWaiting, stepCommitting: PhaseWaiting} {
		if got := seen[step]; got.Phase != want || got.To != r.apps.V2 {
			t.Errorf("Status at step %s = %+v, want phase %s to v2", step, got, want)
		}
	}
	// v2 shares its one layer with v1, so the pull finds it present (and
	// reports no layer at all when another test already pulled the same
	// image content from its own registry).
	if p := seen[stepCreatingNew].Pull; p.Layers > 1 || p.Current != p.Total {
		t.Errorf("pull progress after the pull = %+v, want at most 1 layer, complete", p)
	}
	t.Cleanup(in.(*Instance).Detach)
	if in.ID() == old.ID() {
		t.Errorf("instance after update = %s, want a new container", in.ID())
	}
	r.waitBody("/version", "v2")
	r.waitBody("/data", "written by v1")

	if _, err := r.cli.ContainerInspect(ctx, old.ContainerID()); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect old container: err = %v, want not found (removed at commit)", err)
	}
	if n := len(r.containers()); n != 1 {
		t.Errorf("unit has %d containers, want 1", n)
	}
	if _, err := r.cli.ImageInspect(ctx, r.apps.V1); err != nil {
		t.Errorf("previous image v1 gone (%v), want it kept for one rollback", err)
	}
	st := d.Status()
	if st.Phase != PhaseCommitted || st.Image != r.apps.V2 || st.From != r.apps.V1 {
		t.Errorf("Status = %+v, want committed on v2 from v1", st)
	}
	if want, _ := d.Wants(r.apps.V2); want {
		t.Errorf("Wants(v2) after commit = true, want false")
	}
	// A new agent keeps running the committed image.
	d2 := r.driver(r.apps.V1)
	if got := d2.CurrentImage(); got != r.apps.V2 {
		t.Errorf("new driver CurrentImage = %s, want committed %s", got, r.apps.V2)
	}
}

func TestUpdateRollsBackNeverReady(t *testing.T) {
	r := newRig(t)
	window := 3 * time.Second
	d := r.driver(r.apps.V2, func(o *Options) { o.UpdateWindow = window })
	old := r.start(d, nil)
	r.waitBody("/version", "v2")

	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	in, err := d.Update(ctx, old, r.apps.V3, staticEnv(), r.prober())
	var rb *RolledBackError
	if !errors.As(err, &rb) {
		t.Fatalf("Update v2→v3 err = %v, want *RolledBackError", err)
	}
	t.Cleanup(in.(*Instance).Detach)
	if !strings.Contains(rb.Reason, "not ready within "+window.String()) {
		t.Errorf("reason = %q, want it to say not ready within the window", rb.Reason)
	}
	if in.ID() != old.ID() {
		t.Errorf("restored instance = %s, want the old container %s", in.ID(), old.ID())
	}
	r.waitBody("/version", "v2")
	if cs := r.containers(); len(cs) != 1 || cs[0].ID != old.ContainerID() {
		t.Errorf("containers after rollback = %d, want only the old one", len(cs))
	}
	st := d.Status()
	if st.Phase != PhaseRolledBack || st.To != r.apps.V3 || st.Image != r.apps.V2 {
		t.Errorf("Status = %+v, want rolled_back to v2 from v3", st)
	}

	// v3 is not retried while the desired state still names it, even by a
	// restarted agent.
	again, err := d.Update(ctx, in, r.apps.V3, staticEnv(), r.prober())
	if err != nil || again != in {
		t.Errorf("second Update(v3) = %v, %v; want the same instance and no error", again, err)
	}
	d2 := r.driver(r.apps.V2)
	if want, err := d2.Wants(r.apps.V3); want || err != nil {
		t.Errorf("restarted agent Wants(v3) = %v, %v; want false", want, err)
	}
	// Once the desired state names another image, v3 may be tried again.
	if want, _ := d2.Wants(r.apps.V1); !want {
		t.Errorf("Wants(v1) = false, want true")
	}
	if want, _ := d2.Wants(r.apps.V3); !want {
		t.Errorf("Wants(v3) after the desired state changed = false, want true")
	}
}

func TestTagRefusedAsDesiredState(t *testing.T) {
	r := newRig(t)
	d := r.driver(r.apps.V1)
	_, err := d.Wants(r.apps.Tag)
	if !errors.Is(err, ErrNotPinned) {
		t.Fatalf("Wants(%s) err = %v, want ErrNotPinned", r.apps.Tag, err)
	}
	if !strings.Contains(err.Error(), "sha256") {
		t.Errorf("error %q does not say how to pin", err)
	}
}

func TestRestartedAgentAdoptsRunningContainer(t *testing.T) {
	r := newRig(t)
	env := []string{"APP_SECRET=one"}
	first := r.start(r.driver(r.apps.V1), env)
	r.waitBody("/version", "v1")
	first.Detach() // the agent dies; the container keeps running
	startedAt := func() string {
		c, err := r.cli.ContainerInspect(context.Background(), first.ContainerID())
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		return c.State.StartedAt
	}
	before := startedAt()

	second := r.start(r.driver(r.apps.V1), env)
	if second.ContainerID() != first.ContainerID() {
		t.Errorf("restarted agent runs container %s, want the adopted %s", second.ID(), first.ID())
	}
	if after := startedAt(); after != before {
		t.Errorf("container restarted on adoption: started at %s, then %s", before, after)
	}
	if n := len(r.containers()); n != 1 {
		t.Errorf("unit has %d containers, want 1", n)
	}
	// The adopted container is watched: stopping it closes Done.
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	if err := second.Stop(ctx, testenv.Short); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-second.Done():
	default:
		t.Errorf("Done not closed after Stop")
	}
	if cs := r.containers(); len(cs) != 1 {
		t.Errorf("Stop removed the container (have %d), want it kept", len(cs))
	}
}

func TestSecretRotationRecreatesContainer(t *testing.T) {
	r := newRig(t)
	sum := func(v string) string { s := sha256.Sum256([]byte(v)); return hex.EncodeToString(s[:]) }
	d := r.driver(r.apps.V1)
	first := r.start(d, []string{"APP_SECRET=old-secret-value"})
	r.waitBody("/env/APP_SECRET", sum("old-secret-value"))
	if code, _, err := r.do("PUT", "/data", "kept"); err != nil || code != 204 {
		t.Fatalf("PUT /data = %d, %v", code, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	if err := first.Stop(ctx, testenv.Short); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	second := r.start(d, []string{"APP_SECRET=new-secret-value"})
	if second.ContainerID() == first.ContainerID() {
		t.Fatalf("container not recreated after the env changed")
	}
	r.waitBody("/env/APP_SECRET", sum("new-secret-value"))
	r.waitBody("/data", "kept")
	cs := r.containers()
	if len(cs) != 1 {
		t.Fatalf("unit has %d containers, want 1", len(cs))
	}
	for k, v := range cs[0].Labels {
		if strings.Contains(v, "secret-value") {
			t.Errorf("label %s=%q holds the secret", k, v)
		}
	}
}

func TestPrivateRegistryCredentials(t *testing.T) {
	r := newRig(t, containertest.WithBasicAuth("bot", "tok3n"))
	if _, err := r.driver(r.apps.V1).Start(context.Background(), nil); err == nil {
		t.Fatalf("Start without credentials succeeded, want a pull error")
	}
	cred := secretstore.New("bot:tok3n")
	d := r.driver(r.apps.V1, func(o *Options) {
		o.Auth = func(_ context.Context, image string) (AuthConfig, error) {
			host, err := RegistryHost(image)
			if err != nil {
				return AuthConfig{}, err
			}
			return ParseAuth(cred, host)
		}
	})
	r.start(d, nil)
	r.waitBody("/version", "v1")
}

func TestContainerSettingsReachDocker(t *testing.T) {
	r := newRig(t)
	s := r.spec(r.apps.V1)
	s.Network = r.agent + "-net"
	s.Cmd = []string{"-version", "from-cmd"}
	s.User = "1000:1000"
	s.StopSignal = "SIGINT"
	s.Healthcheck = &config.Healthcheck{Test: []string{"CMD", "/app", "-h"}, Interval: config.D(time.Minute), Retries: 2}
	d, err := New(r.options(), s)
	if err != nil {
		t.Fatal(err)
	}
	in := r.start(d, []string{"APP_SECRET=x"})
	r.waitBody("/version", "from-cmd")

	ctx := context.Background()
	c, err := r.cli.ContainerInspect(ctx, in.ContainerID())
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	ep := c.NetworkSettings.Networks[s.Network]
	if ep == nil || !slices.Contains(ep.Aliases, "app") {
		t.Errorf("network %s endpoint = %+v, want alias app", s.Network, ep)
	}
	net, err := r.cli.NetworkInspect(ctx, s.Network, network.InspectOptions{})
	if err != nil || net.Labels[LabelAgent] != r.agent {
		t.Errorf("network %s labels = %v, %v; want created with the agent label", s.Network, net.Labels, err)
	}
	if c.Config.User != "1000:1000" || c.Config.StopSignal != "SIGINT" {
		t.Errorf("user, stop signal = %q, %q; want 1000:1000, SIGINT", c.Config.User, c.Config.StopSignal)
	}
	if hc := c.Config.Healthcheck; hc == nil || hc.Interval != time.Minute || hc.Retries != 2 || !slices.Equal(hc.Test, s.Healthcheck.Test) {
		t.Errorf("healthcheck = %+v, want %+v", hc, s.Healthcheck)
	}
	if c.HostConfig.RestartPolicy.Name != "no" || c.HostConfig.LogConfig.Config["max-size"] == "" {
		t.Errorf("restart policy %q, log config %v; want no restart and bounded logs", c.HostConfig.RestartPolicy.Name, c.HostConfig.LogConfig.Config)
	}
	if got := c.Config.Labels[LabelUnit]; got != "app" {
		t.Errorf("unit label = %q, want app", got)
	}
	if !slices.Contains(c.Config.Env, "APP_SECRET=x") {
		t.Errorf("env = %v, want APP_SECRET=x", c.Config.Env)
	}
}

// TestJournalWriteFailureKeepsOldVersion breaks the state dir in the middle
// of an update (after the old container stopped): the update must undo
// itself and leave the old version serving.
func TestJournalWriteFailureKeepsOldVersion(t *testing.T) {
	r := newRig(t)
	d := r.driver(r.apps.V1)
	old := r.start(d, nil)
	r.waitBody("/version", "v1")
	d.hook = func(step string) {
		if step == stepStoppingOld {
			dir := filepath.Dir(d.statePath)
			if err := os.RemoveAll(dir); err != nil {
				t.Error(err)
			}
			if err := os.WriteFile(dir, []byte("not a dir"), 0o600); err != nil {
				t.Error(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	in, err := d.Update(ctx, old, r.apps.V2, staticEnv(), r.prober())
	var rb *RolledBackError
	if !errors.As(err, &rb) || in == nil {
		t.Fatalf("Update with a broken state dir = %v, %v; want the old instance and a rollback", in, err)
	}
	t.Cleanup(in.(*Instance).Detach)
	r.waitBody("/version", "v1")
	if run := r.running(); len(run) != 1 || run[0].ID != old.ContainerID() {
		t.Errorf("running = %d containers, want only the old one", len(run))
	}
	if n := len(r.containers()); n != 1 {
		t.Errorf("unit has %d containers, want 1 (the new one removed)", n)
	}
}

// waitProber polls p until it is ready.
func waitProber(t *testing.T, p interface {
	Ready(context.Context) (bool, string, error)
}) string {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	var detail string
	for time.Now().Before(deadline) {
		ok, d, err := p.Ready(context.Background())
		if ok {
			return d
		}
		detail = fmt.Sprint(d, err)
		time.Sleep(50 * time.Millisecond) // polling Docker's health status
	}
	t.Fatalf("never ready: %s", detail)
	return ""
}

func TestHealthProberGatesUpdates(t *testing.T) {
	r := newRig(t)
	s := r.spec(r.apps.V2)
	s.Healthcheck = &config.Healthcheck{Test: []string{"CMD", "/app", "-check", "http://127.0.0.1:8080/health"},
		Interval: config.D(200 * time.Millisecond), Timeout: config.D(2 * time.Second), Retries: 1}
	o := r.options()
	o.UpdateWindow = 4 * time.Second
	d, err := New(o, s)
	if err != nil {
		t.Fatal(err)
	}
	hp := d.HealthProber()
	if ok, detail, _ := hp.Ready(context.Background()); ok {
		t.Fatalf("ready before any container: %s", detail)
	}
	old := r.start(d, nil)
	if got := waitProber(t, hp); got != "health healthy (last check exit 0)" {
		t.Errorf("detail = %q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	in, err := d.Update(ctx, old, r.apps.V3, staticEnv(), hp)
	var rb *RolledBackError
	if !errors.As(err, &rb) {
		t.Fatalf("Update to never-healthy v3 = %v, want a rollback", err)
	}
	t.Cleanup(in.(*Instance).Detach)
	if !strings.Contains(rb.Reason, "health") {
		t.Errorf("reason = %q, want the health status", rb.Reason)
	}
	waitProber(t, hp) // the restored v2 is healthy again
	r.waitBody("/version", "v2")
}

// TestCommitKeepsOnePreviousImage: after each commit the image just left is
// kept for one rollback and the one before it is removed (the configured
// image is always kept).
func TestCommitKeepsOnePreviousImage(t *testing.T) {
	r := newRig(t)
	v4 := r.reg.Push(t, "test/app", "v4", containertest.AppImage(t, containertest.Variant{Version: "v4"}))
	v5 := r.reg.Push(t, "test/app", "v5", containertest.AppImage(t, containertest.Variant{Version: "v5"}))
	d := r.driver(r.apps.V1)
	var in supervisor.Instance = r.start(d, nil)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	for _, img := range []string{r.apps.V2, v4, v5} {
		next, err := d.Update(ctx, in, img, staticEnv(), r.prober())
		if err != nil {
			t.Fatalf("Update to %s: %v", img, err)
		}
		t.Cleanup(next.(*Instance).Detach)
		in = next
	}
	r.waitBody("/version", "v5")
	present := func(ref string) bool {
		_, err := r.cli.ImageInspect(ctx, ref)
		return err == nil
	}
	for ref, want := range map[string]bool{r.apps.V1: true, r.apps.V2: false, v4: true, v5: true} {
		if got := present(ref); got != want {
			t.Errorf("image %s present = %v, want %v", ref, got, want)
		}
	}
}

// TestFailedPullKeepsOldContainer: a changed spec whose image cannot be
// pulled leaves the old container in place instead of removing it first.
func TestFailedPullKeepsOldContainer(t *testing.T) {
	r := newRig(t)
	first := r.start(r.driver(r.apps.V1), nil)
	r.waitBody("/version", "v1")
	first.Detach()
	missing := r.reg.Host + "/test/missing@sha256:" + strings.Repeat("0", 64)
	if _, err := r.driver(missing).Start(context.Background(), nil); err == nil {
		t.Fatalf("Start with an unpullable image succeeded")
	}
	if run := r.running(); len(run) != 1 || run[0].ID != first.ContainerID() {
		t.Errorf("running containers = %d, want the old one untouched", len(run))
	}
	r.waitBody("/version", "v1")
}
