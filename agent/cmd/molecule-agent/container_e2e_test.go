//go:build unix

package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/container/containertest"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func httpGet(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The tenant-style update path through the real agent binary and a real
// Docker engine: desired images from a local file, v1 → v2 committed with
// the volume's data kept, v2 → v3 (never ready) rolled back and not retried,
// and a restarted agent adopting the running container.
func TestContainerUpdatesThroughTheAgent(t *testing.T) {
	testenv.RequireDocker(t)
	cli := containertest.Docker(t)
	reg := containertest.NewRegistry(t)
	apps := reg.PushApps(t)
	runID := containertest.RunID()
	containertest.CleanupLabel(t, cli, container.LabelAgent, runID, reg.Host)

	dir := t.TempDir()
	if err := os.MkdirAll(dir+"/state", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir+"/state/agent-id", []byte(runID), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	desired := filepath.Join(dir, "desired.json")
	writeDesired := func(img string) {
		t.Helper()
		body := fmt.Sprintf(`{"app": %q}`, img)
		if err := os.WriteFile(desired+".tmp", []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(desired+".tmp", desired); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
updates: {desired_file: %[2]s, window: 8s}
units:
  - name: app
    kind: container
    container:
      image: %[3]s
      volumes: ["%[4]s-data:/data"]
      ports: ["127.0.0.1:%[5]d:8080"]
      update: auto
    ready: {http: "http://127.0.0.1:%[5]d/health", status: 200, interval: 200ms}
    stop: {grace: 2s}
`, dir, desired, apps.V1, runID, port)
	path := writeConfig(t, dir, cfg)
	run := func() *agentProc { return runAgent(t, dir, path, nil) }
	a := run()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	r := a.waitFor(t, "v1 ready", func(r *status.Report) bool { return unitOf(r, "app").Ready })
	if _, v := httpGet(base + "/version"); !strings.Contains(v, "v1") {
		t.Fatalf("serving %q, want v1", v)
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/data", strings.NewReader("written by v1"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode/100 != 2 {
		t.Fatalf("PUT /data: %v", err)
	}
	v1ID := unitOf(r, "app").ID

	// An agent restart (SIGTERM, as systemd does) leaves the container
	// serving, and the new agent adopts it: same ID, no restart.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	<-a.done
	if code, v := httpGet(base + "/version"); code != 200 || !strings.Contains(v, "v1") {
		t.Errorf("while the agent was down the container answered %d %q", code, v)
	}
	a = run()
	r = a.waitFor(t, "adopted", func(r *status.Report) bool { return unitOf(r, "app").Ready })
	if id := unitOf(r, "app").ID; id != v1ID {
		t.Errorf("container %s replaced by %s on agent restart; want it adopted", v1ID, id)
	}

	// v1 → v2: committed, data kept.
	writeDesired(apps.V2)
	a.waitFor(t, "v2 committed", func(r *status.Report) bool {
		u := unitOf(r, "app")
		return u.Ready && updatePhase(u, apps.V2) == "committed"
	})
	if _, v := httpGet(base + "/version"); !strings.Contains(v, "v2") {
		t.Errorf("serving %q after the update, want v2", v)
	}
	if _, d := httpGet(base + "/data"); d != "written by v1" {
		t.Errorf("v2 reads %q from the volume, want what v1 wrote", d)
	}

	// v2 → v3 (never ready): rolled back to v2 within the window, not retried.
	writeDesired(apps.V3)
	a.waitFor(t, "v3 rolled back", func(r *status.Report) bool {
		u := unitOf(r, "app")
		return u.Ready && updatePhase(u, apps.V2) == "rolled_back"
	})
	if _, v := httpGet(base + "/version"); !strings.Contains(v, "v2") {
		t.Errorf("serving %q after the rollback, want v2", v)
	}
	time.Sleep(3 * time.Second)
	if u := unitOf(a.status(t), "app"); updatePhase(u, apps.V2) != "rolled_back" {
		t.Errorf("v3 retried: %+v", u.Container)
	}
	if n := strings.Count(a.log.String(), `"msg":"updating unit"`); n != 2 {
		t.Errorf("%d update attempts, want 2 (v2 once, v3 once)", n)
	}
}

// updatePhase is the unit's update phase while it runs image, else "".
func updatePhase(u supervisor.UnitStatus, image string) string {
	if c := u.Container; c != nil && c.Image == image && c.Update != nil {
		return c.Update.Phase
	}
	return ""
}
