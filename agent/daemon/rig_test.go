//go:build unix

package daemon_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/daemon"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// rig runs a real daemon in the test process: real unit processes (sh),
// a file secrets source, and, when asked, a control plane speaking the api.
type rig struct {
	t       *testing.T
	dir     string
	d       *daemon.Daemon
	log     *testenv.Buffer
	stop    context.CancelFunc
	done    chan error
	once    sync.Once
	secrets string
}

// newRig writes the secrets file and the config (units is the YAML list of
// units; %[1]s in it is the rig's dir), assembles the daemon and runs it.
func newRig(t *testing.T, secrets map[string]string, extra, units string) *rig {
	t.Helper()
	testenv.RequireRoot(t) // units run as root-owned process groups; files are chowned
	r := &rig{t: t, dir: t.TempDir(), log: &testenv.Buffer{}, done: make(chan error, 1)}
	r.secrets = filepath.Join(r.dir, "secrets.yaml")
	r.writeSecrets(secrets)
	cfg := fmt.Sprintf("state_dir: %[1]s/state\nrun_dir: %[1]s/run\nsecrets: {source: file, file: %[2]s, refresh: 100ms}\n",
		r.dir, r.secrets) + extra + "units:\n" + fmt.Sprintf(units, r.dir)
	c, err := config.Parse(strings.NewReader(cfg))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, cfg)
	}
	log := slog.New(slog.NewTextHandler(r.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	if r.d, err = daemon.Assemble(ctx, c, log, "test"); err != nil {
		t.Fatalf("Assemble: %v", err)
	}
	go func() { r.done <- r.d.Run(ctx) }()
	t.Cleanup(func() {
		r.shutdown()
		if t.Failed() {
			t.Logf("agent log:\n%s", r.log.String())
		}
	})
	return r
}

// shutdown stops the daemon as SIGTERM does (the command cancels Run's
// context) and waits for Run to return.
func (r *rig) shutdown() {
	r.once.Do(func() {
		r.stop()
		select {
		case err := <-r.done:
			if err != nil {
				r.t.Errorf("Run: %v", err)
			}
		case <-time.After(testenv.Long):
			r.t.Fatal("Run did not return after its context was cancelled")
		}
	})
}

// waitPath waits until a unit process has created path (a process outside
// the agent has no change signal to wait on).
func (r *rig) waitPath(path string) {
	r.t.Helper()
	r.poll("file "+path, func() bool { _, err := os.Stat(path); return err == nil })
}

// waitFile waits until path holds want.
func (r *rig) waitFile(path, want string) {
	r.t.Helper()
	r.poll(path+" holding "+want, func() bool { b, err := os.ReadFile(path); return err == nil && string(b) == want })
}

func (r *rig) poll(what string, cond func() bool) {
	r.t.Helper()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(testenv.Long)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-t.C:
		case <-deadline.C:
			r.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (r *rig) writeSecrets(s map[string]string) {
	r.t.Helper()
	var b strings.Builder
	for k, v := range s {
		fmt.Fprintf(&b, "%s: %q\n", k, v)
	}
	tmp := r.secrets + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Rename(tmp, r.secrets); err != nil {
		r.t.Fatal(err)
	}
}

// waitUnits waits, on the supervisor's change signal, until cond holds for
// the units' status by name.
func (r *rig) waitUnits(what string, cond func(map[string]supervisor.UnitStatus) bool) map[string]supervisor.UnitStatus {
	r.t.Helper()
	deadline := time.NewTimer(testenv.Long)
	defer deadline.Stop()
	for {
		ch := r.d.Supervisor().Changed()
		st := map[string]supervisor.UnitStatus{}
		for _, u := range r.d.Supervisor().Status() {
			st[u.Name] = u
		}
		if cond(st) {
			return st
		}
		select {
		case <-ch:
		case <-deadline.C:
			r.t.Fatalf("timed out waiting for %s: %+v", what, st)
		}
	}
}

func allReady(st map[string]supervisor.UnitStatus) bool {
	for _, u := range st {
		if !u.Ready {
			return false
		}
	}
	return len(st) > 0
}

// gone reports whether no process has pid any more.
func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// controlPlane is an httptest server speaking the control plane's api:
// register, then heartbeats answered by reply.
type controlPlane struct {
	*httptest.Server
	mu    sync.Mutex
	beats []api.HeartbeatRequest
	// atRegister is what onRegister returned when the host registered.
	atRegister any
	onRegister func() any
	// reply answers a heartbeat with a status code (200 or 410).
	reply func(api.HeartbeatRequest) int
	beat  chan struct{}
}

func newControlPlane(t *testing.T, onRegister func() any, reply func(api.HeartbeatRequest) int) *controlPlane {
	cp := &controlPlane{onRegister: onRegister, reply: reply, beat: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathRegister, func(w http.ResponseWriter, _ *http.Request) {
		cp.mu.Lock()
		if cp.onRegister != nil {
			cp.atRegister = cp.onRegister()
		}
		cp.mu.Unlock()
		_ = json.NewEncoder(w).Encode(api.RegisterResponse{HostID: "h1", HostToken: "host-token-1", IntervalMS: 100, Org: "acme", Role: "tenant"})
	})
	mux.HandleFunc("POST /v1/hosts/h1/heartbeat", func(w http.ResponseWriter, req *http.Request) {
		var hb api.HeartbeatRequest
		if err := json.NewDecoder(req.Body).Decode(&hb); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		cp.mu.Lock()
		cp.beats = append(cp.beats, hb)
		code := cp.reply(hb)
		cp.mu.Unlock()
		select {
		case cp.beat <- struct{}{}:
		default:
		}
		if code != http.StatusOK {
			http.Error(w, http.StatusText(code), code)
			return
		}
		_ = json.NewEncoder(w).Encode(api.HeartbeatResponse{IntervalMS: 100})
	})
	cp.Server = httptest.NewServer(mux)
	t.Cleanup(cp.Close)
	return cp
}

// waitBeat waits until a heartbeat satisfies cond and returns it.
func (cp *controlPlane) waitBeat(t *testing.T, what string, cond func(api.HeartbeatRequest) bool) api.HeartbeatRequest {
	t.Helper()
	deadline := time.NewTimer(testenv.Long)
	defer deadline.Stop()
	for {
		cp.mu.Lock()
		for _, hb := range cp.beats {
			if cond(hb) {
				cp.mu.Unlock()
				return hb
			}
		}
		cp.mu.Unlock()
		select {
		case <-cp.beat:
		case <-deadline.C:
			t.Fatalf("timed out waiting for a heartbeat with %s", what)
		}
	}
}

// controlPlaneConfig is the config section for cp with an enrollment token
// in a file.
func controlPlaneConfig(t *testing.T, cp *controlPlane) string {
	tok := filepath.Join(t.TempDir(), "enroll")
	if err := os.WriteFile(tok, []byte("enroll-token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("control_plane: {url: %q, org: acme}\nidentity: {mode: enrollment, enrollment_token: \"file:%s\"}\n",
		cp.URL, tok)
}

func itoa(n int) string { return fmt.Sprint(n) }
