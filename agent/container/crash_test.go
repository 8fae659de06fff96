//go:build unix

package container

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// helperEnv makes the test binary act as an agent that adopts the unit,
// starts an update and, at the step named by helper_crash_at, announces
// "AT <step>" and hangs until the test SIGKILLs it.
const helperEnv = "MOLECULE_CONTAINER_HELPER"

func runHelper() int {
	get := os.Getenv
	port, _ := strconv.Atoi(get("HELPER_PORT"))
	cli, err := NewClient()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	d, err := New(testOptions(cli, get("HELPER_AGENT"), get("HELPER_STATE")), testSpec(get("HELPER_AGENT"), port, get("HELPER_FROM")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	crashAt := get("HELPER_CRASH_AT")
	d.hook = func(step string) {
		if step == crashAt {
			fmt.Println("AT " + step)
			select {} // wait for SIGKILL
		}
	}
	ctx := context.Background()
	in, err := d.Start(ctx, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 2
	}
	prober := &supervisor.HTTPProbe{URL: fmt.Sprintf("http://127.0.0.1:%d/health", port)}
	if _, err := d.Update(ctx, in, get("HELPER_TO"), staticEnv(), prober); err != nil {
		fmt.Fprintln(os.Stderr, "update:", err)
		return 2
	}
	fmt.Println("DONE")
	return 0
}

// killAgentAt runs the helper agent and SIGKILLs it once it reaches step,
// or, if reached is not nil, once reached is closed.
func (r *rig) killAgentAt(step, from, to string, reached <-chan struct{}) {
	r.t.Helper()
	crashAt := step
	if reached != nil {
		crashAt = "" // the helper runs on; the test kills it mid-pull
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "HELPER_AGENT="+r.agent, "HELPER_STATE="+r.state,
		"HELPER_PORT="+strconv.Itoa(r.port), "HELPER_FROM="+from, "HELPER_TO="+to, "HELPER_CRASH_AT="+crashAt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start helper agent: %v", err)
	}
	lines := make(chan string)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.NewTimer(testenv.Long)
	defer timeout.Stop()
	at := false
	for !at {
		select {
		case <-reached: // nil unless the test waits on the registry
			at = true
		case l, ok := <-lines:
			if !ok {
				_ = cmd.Wait()
				r.t.Fatalf("helper agent ended before step %s; stderr:\n%s", step, stderr.String())
			}
			at = l == "AT "+step
		case <-timeout.C:
			_ = cmd.Process.Kill()
			for range lines {
			}
			_ = cmd.Wait()
			r.t.Fatalf("helper agent never reached step %s; stderr:\n%s", step, stderr.String())
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		r.t.Fatalf("SIGKILL helper agent: %v", err)
	}
	for range lines {
	}
	<-scanned
	_ = cmd.Wait()
}

func TestCrashDuringUpdateRecoversToOneVersion(t *testing.T) {
	tests := []struct {
		name, step  string
		wantVersion string
	}{
		{"during pull", stepPulling, "v1"},
		{"after create new", stepStoppingOld, "v1"},
		{"after stop old", stepStartingNew, "v1"},
		{"after start new", stepWaiting, "v1"},
		{"after new was ready", stepCommitting, "v2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			first := r.start(r.driver(r.apps.V1), nil)
			r.waitBody("/version", "v1")
			first.Detach()

			var reached <-chan struct{}
			release := func() {}
			if tt.step == stepPulling {
				// Kill the agent while Docker is fetching v2's manifest.
				_, digest, _ := strings.Cut(r.apps.V2, "@")
				reached, release = r.reg.Hold(t, "/manifests/"+digest)
			}
			r.killAgentAt(tt.step, r.apps.V1, r.apps.V2, reached)
			release()
			st, err := loadState(r.driver(r.apps.V1).statePath)
			if err != nil || st.Pending == nil || st.Pending.Step != tt.step {
				t.Fatalf("journal after the kill = %+v, %v; want a pending update at %s", st.Pending, err, tt.step)
			}

			// The agent restarts.
			d := r.driver(r.apps.V1)
			in := r.start(d, nil)
			r.waitBody("/health", "ok "+tt.wantVersion+"\n")
			run := r.running()
			if len(run) != 1 || run[0].ID != in.ContainerID() {
				t.Fatalf("running containers = %d, want exactly the started one", len(run))
			}
			if n := len(r.containers()); n != 1 {
				t.Errorf("unit has %d containers after recovery, want 1", n)
			}
			if tt.wantVersion == "v2" {
				return
			}
			// The interrupted update was not the image's fault: it is retried.
			ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
			defer cancel()
			got, err := d.Update(ctx, in, r.apps.V2, staticEnv(), r.prober())
			if err != nil {
				t.Fatalf("retried update: %v", err)
			}
			t.Cleanup(got.(*Instance).Detach)
			r.waitBody("/version", "v2")
		})
	}
}
