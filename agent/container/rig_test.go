//go:build unix

package container

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	goleak.VerifyTestMain(m)
}

// rig is one test's Docker world: a registry with the app images, a unit
// spec with its own volume and host port, and an agent ID that labels (and
// cleans up) everything the test creates.
type rig struct {
	t     *testing.T
	cli   *client.Client // the official client checks what the driver's did
	eng   *Client        // the driver's client
	reg   *containertest.Registry
	apps  containertest.Apps
	agent string
	state string
	port  int
	http  *http.Client
}

func newRig(t *testing.T, opts ...containertest.RegistryOption) *rig {
	t.Helper()
	cli := containertest.Docker(t)
	r := &rig{t: t, cli: cli, eng: engine(t), reg: containertest.NewRegistry(t, opts...), agent: containertest.RunID(),
		state: t.TempDir(), port: freePort(t),
		http: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	containertest.CleanupLabel(t, cli, LabelAgent, r.agent, r.reg.Host)
	r.apps = r.reg.PushApps(t)
	return r
}

// engine returns the driver's client for the local engine.
func engine(t testing.TB) *Client {
	t.Helper()
	c, err := NewClient()
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close) // runs after the instances' Detach, registered later
	return c
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (r *rig) spec(image string) Spec { return testSpec(r.agent, r.port, image) }

// testSpec is the test unit "app": the test image with its own volume and
// host port.
func testSpec(agent string, port int, image string) Spec {
	return Spec{
		Unit:      "app",
		Image:     image,
		Volumes:   []config.VolumeMount{{Name: agent + "-data", Path: containertest.DataDir}},
		Ports:     []config.PortBinding{{HostIP: "127.0.0.1", HostPort: uint16(port), ContainerPort: 8080, Proto: "tcp"}},
		StopGrace: 5 * time.Second,
		// The test unit has a volume but opts into updates.
		UpdatePolicy: config.UpdateAuto,
	}
}

func (r *rig) options() Options {
	o := testOptions(r.eng, r.agent, r.state)
	o.Log = slog.New(slog.NewTextHandler(r.t.Output(), nil))
	return o
}

func testOptions(cli *Client, agent, state string) Options {
	return Options{Client: cli, Agent: agent, StateDir: state, NamePrefix: agent + "-",
		UpdateWindow: testenv.Short, ProbeInterval: 50 * time.Millisecond}
}

func (r *rig) driver(image string, edit ...func(*Options)) *Driver {
	r.t.Helper()
	o := r.options()
	for _, e := range edit {
		e(&o)
	}
	d, err := New(o, r.spec(image))
	if err != nil {
		r.t.Fatalf("New: %v", err)
	}
	return d
}

// start starts the unit and detaches from it at cleanup (the containers are
// removed by the label cleanup).
func (r *rig) start(d *Driver, env []string) *Instance {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	in, err := d.Start(ctx, env)
	if err != nil {
		r.t.Fatalf("Start: %v", err)
	}
	ci := in.(*Instance)
	r.t.Cleanup(ci.Detach)
	return ci
}

func (r *rig) prober() supervisor.Prober {
	return &supervisor.HTTPProbe{URL: fmt.Sprintf("http://127.0.0.1:%d/health", r.port), Client: r.http}
}

func (r *rig) do(method, path, body string) (int, string, error) {
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", r.port, path), strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitBody polls GET path until it answers 200 with want.
func (r *rig) waitBody(path, want string) {
	r.t.Helper()
	deadline := time.Now().Add(testenv.Long)
	var code int
	var body string
	var err error
	for time.Now().Before(deadline) {
		code, body, err = r.do("GET", path, "")
		if err == nil && code == 200 && body == want {
			return
		}
		time.Sleep(50 * time.Millisecond) // polling a real server, not synchronising
	}
	r.t.Fatalf("GET %s = %d %q (%v), want 200 %q", path, code, body, err, want)
}

// containers lists the unit's containers (all states).
func (r *rig) containers() []container.Summary {
	r.t.Helper()
	f := filters.NewArgs(filters.Arg("label", LabelAgent+"="+r.agent), filters.Arg("label", LabelUnit+"=app"))
	cs, err := r.cli.ContainerList(context.Background(), container.ListOptions{All: true, Filters: f})
	if err != nil {
		r.t.Fatalf("list containers: %v", err)
	}
	return cs
}

func (r *rig) running() []container.Summary {
	var out []container.Summary
	for _, c := range r.containers() {
		if c.State == "running" {
			out = append(out, c)
		}
	}
	return out
}

func staticEnv(env ...string) EnvFunc {
	return func(context.Context) ([]string, error) { return env, nil }
}
