//go:build unix

package workspace_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/restart"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// runtimeBin is the stand-in runtime, built once by TestMain ("" when the go
// tool is missing: e2e tests then skip, or fail under CI).
var runtimeBin string

func TestMain(m *testing.M) {
	if err := supervisor.BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	os.Exit(testenv.RunMain(m, func(dir string) (err error) {
		if _, err := exec.LookPath("go"); err != nil {
			return nil // e2e tests then skip, or fail under CI
		}
		runtimeBin, err = workspacetest.BuildRuntime(dir)
		return err
	}))
}

const (
	workspaceID = "8d0a4c9e-2f7b-4b7e-9a51-3c1de0f4a001"
	orgID       = "org-acme"
	tokenName   = workspace.DefaultTokenSecret
	// hostIP is the runtime's registered address: a private one, as the
	// real tenant refuses loopback and TEST-NET URLs (the stand-in tenant
	// checks the URL, and nothing calls it back).
	hostIP = "10.77.0.2"
)

type rigOptions struct {
	token      string // the token in the secrets source at start; "" = missing
	laterToken string // when set, the source holds this one after the first load
	laterRaw   string // when set, the source's raw content after the first load (wins over laterToken)
	proxy      bool
	// blind hides the runtime's output from the Checker, leaving the
	// RegisterTimeout fallback (set here) to detect a rejected register.
	blind           bool
	registerTimeout time.Duration
	// user runs the runtime as this user (needs root).
	user string
	// base reuses the directory of an earlier rig (an agent restart on
	// the same host: configs dir, runtime log, agent state).
	base string
	// noProviderKey leaves the workspace secret out of the source.
	noProviderKey bool
}

// rig is the workspace role assembled from real parts: a file secrets
// source and store, the real supervisor running the stand-in runtime with
// ExecDriver, the rotating log sink, the Checker, against the stand-in tenant.
type rig struct {
	t       *testing.T
	ten     *workspacetest.Tenant
	store   *secretstore.Store
	sup     *supervisor.Supervisor
	checker *workspace.Checker
	proxy   *workspace.Proxy
	logs    *testenv.Buffer
	base    string
	state   *workspace.State
	execLog string
	close   func()
	dir     string
	logPath string
	secPath string
	port    int
}

func requireRuntime(t *testing.T) {
	t.Helper()
	if runtimeBin == "" {
		testenv.Missing(t, "the go tool (to build the stand-in runtime)")
	}
}

func writeSecrets(t *testing.T, path, token string) { writeSecretsWith(t, path, token, true) }

func writeSecretsWith(t *testing.T, path, token string, providerKey bool) {
	t.Helper()
	content := ""
	if providerKey {
		content = "openai-api-key: sk-test-not-a-token\n"
	}
	if token != "" {
		content += tokenName + ": " + token + "\n"
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newRig(t *testing.T, ten *workspacetest.Tenant, o rigOptions) *rig {
	t.Helper()
	requireRuntime(t)
	tmp := o.base
	switch {
	case tmp != "":
	case o.user == "":
		tmp = t.TempDir()
	default:
		// The runtime user must reach the configs dir: t.TempDir is 0700.
		var err error
		if tmp, err = os.MkdirTemp("", "workspace-rig-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(tmp) })
		if err := os.Chmod(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	port := 0
	if b, err := os.ReadFile(filepath.Join(tmp, "port")); err == nil {
		port, _ = strconv.Atoi(string(b))
	} else {
		port = freePort(t)
		_ = os.WriteFile(filepath.Join(tmp, "port"), []byte(strconv.Itoa(port)), 0o644)
	}
	r := &rig{t: t, ten: ten, logs: &testenv.Buffer{}, base: tmp, dir: filepath.Join(tmp, "configs"),
		logPath: filepath.Join(tmp, "molecule-runtime.log"), secPath: filepath.Join(tmp, "secrets.yaml"), port: port,
		execLog: filepath.Join(tmp, "exec.log")}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	writeSecretsWith(t, r.secPath, o.token, !o.noProviderKey)
	var err error
	if r.state, err = workspace.OpenState(filepath.Join(tmp, "state", workspace.StateFileName), workspaceID); err != nil {
		t.Fatal(err)
	}
	r.store = secretstore.NewStore(secretstore.NewFile(r.secPath), secretstore.StoreOptions{Logger: log})
	if err := r.store.Load(t.Context()); err != nil {
		t.Fatal(err)
	}
	if o.laterToken != "" {
		writeSecrets(t, r.secPath, o.laterToken)
	}
	if o.laterRaw != "" {
		if err := os.WriteFile(r.secPath, []byte(o.laterRaw), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	platformURL := ten.URL()
	if o.proxy {
		p, err := workspace.ListenProxy("127.0.0.1:0", ten.URL(), orgID, log)
		if err != nil {
			t.Fatal(err)
		}
		r.proxy, platformURL = p, p.URL()
	}
	logf, err := workspace.OpenRotating(r.logPath, 64<<10, 2, -1, -1)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var sup *supervisor.Supervisor
	r.checker, err = workspace.NewChecker(workspace.CheckerOptions{
		TenantURL: ten.URL(), WorkspaceID: workspaceID, OrgID: orgID, Log: log,
		Interval: 50 * time.Millisecond, SteadyInterval: 100 * time.Millisecond,
		TokenLocation: r.secPath + ":" + tokenName, RegisterTimeout: o.registerTimeout, State: r.state,
		TokenFile:     filepath.Join(r.dir, workspace.TokenFile),
		NoSourceToken: func() bool { _, ok := r.store.Get(tokenName); return !ok },
		RefreshToken: func(ctx context.Context) (bool, error) {
			changed, err := r.store.Refresh(ctx)
			return slices.Contains(changed, tokenName), err
		},
		Restart: func(ctx context.Context, reason string) error { return sup.Restart(ctx, "runtime", reason) },
		Stop:    func() { sup.StopUnits("runtime") },
	})
	if err != nil {
		t.Fatal(err)
	}
	onLine := r.checker.ObserveLine
	if o.blind {
		onLine = nil
	}
	sink, err := workspace.NewSink(logf, onLine)
	if err != nil {
		t.Fatal(err)
	}
	// WORKSPACE_ID, PLATFORM_URL and CONFIGS_DIR come from the unit's env,
	// as the workspace role's YAML sets them; the rest from the options.
	rt := workspace.RuntimeOptions{
		HostIP: hostIP,
		Config: workspace.RuntimeConfig{Name: "Research", Description: "test workspace", Tier: 2,
			Runtime: "claude-code", Model: "anthropic:claude-sonnet", Port: r.port},
		Token:         func() (secretstore.Secret, bool) { return r.store.Get(tokenName) },
		TokenLocation: r.secPath + ":" + tokenName,
		Secrets: func() (map[string]secretstore.Secret, error) {
			v, ok := r.store.Get("openai-api-key")
			if !ok {
				return nil, errors.New("workspace.secrets without a value: OPENAI_API_KEY (secret openai-api-key)")
			}
			return map[string]secretstore.Secret{"OPENAI_API_KEY": v}, nil
		},
		Checker: r.checker, State: r.state, Log: log,
	}
	unitEnv := func(context.Context) ([]string, error) {
		return []string{"PATH=/usr/bin:/bin", "STANDIN_HEARTBEAT_INTERVAL=100ms", "STANDIN_ECHO_ENV=OPENAI_API_KEY", "STANDIN_EXEC_LOG=" + r.execLog, "WORKSPACE_ID=" + workspaceID,
			"PLATFORM_URL=" + platformURL, "CONFIGS_DIR=" + r.dir}, nil
	}
	exec := &supervisor.ExecDriver{Command: runtimeBin, Log: log, User: o.user}
	spec := supervisor.Spec{
		Name: "runtime", Kind: "exec",
		Driver:        exec,
		ProbeInterval: 50 * time.Millisecond, Grace: 5 * time.Second,
		Restart: restart.Policy{Mode: restart.Always, InitialDelay: 50 * time.Millisecond,
			MaxDelay: time.Second, Budget: 10, Window: time.Minute},
		Prepare: unitEnv,
	}
	if err := workspace.Hook(rt, sink)(&spec, exec, config.Unit{Name: "runtime", Builtin: workspace.Builtin, User: o.user}); err != nil {
		t.Fatal(err)
	}
	sup, err = supervisor.New(log, []supervisor.Spec{spec})
	if err != nil {
		t.Fatal(err)
	}
	r.sup = sup
	sup.Start(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.checker.Run(ctx) }()
	var once sync.Once
	r.close = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			sup.Stop()
			sink.Close(2 * time.Second)
			_ = logf.Close()
			if r.proxy != nil {
				_ = r.proxy.Close()
			}
			if t.Failed() {
				t.Logf("agent log:\n%s", r.logs.String())
				b, _ := os.ReadFile(r.logPath)
				t.Logf("runtime log:\n%s", b)
			}
		})
	}
	t.Cleanup(r.close)
	return r
}

// execs counts the runtime's starts on this host (its exec log).
func (r *rig) execs() int {
	b, _ := os.ReadFile(r.execLog)
	return strings.Count(string(b), "\n")
}

func (r *rig) unit() supervisor.UnitStatus {
	return r.sup.Status()[0]
}

// waitFor polls cond until it holds or testenv.Long passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testenv.Long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits for n more registration checks, so a loop would show.
func (r *rig) settle(n int) {
	r.t.Helper()
	target := r.checker.Status().Checks + n
	waitFor(r.t, fmt.Sprintf("%d more registration checks", n), func() bool { return r.checker.Status().Checks >= target })
}

func (r *rig) waitRegistered() {
	r.t.Helper()
	waitFor(r.t, "registration", func() bool {
		return r.checker.Status().Registration == workspace.Registered && r.unit().Ready
	})
}

// leakScan fails if any token appears where it must not: the agent's log,
// the runtime's log files, the runtime's argv, the status (unit status with
// its Report fields, which heartbeats carry) and the checker's status.
func (r *rig) leakScan(pid int, tokens ...string) {
	r.t.Helper()
	places := map[string]string{"agent log": r.logs.String()}
	files, _ := filepath.Glob(r.logPath + "*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		places["runtime log "+filepath.Base(f)] = string(b)
	}
	if pid > 0 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil {
			r.t.Errorf("read runtime argv: %v", err)
		}
		places["runtime argv"] = string(b)
		env, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
		places["runtime environ"] = string(env)
	}
	st, _ := json.Marshal(r.sup.Status())
	places["unit status"] = string(st)
	cs, _ := json.Marshal(r.checker.Status())
	places["checker status"] = string(cs)
	var facets supervisor.Facets
	r.checker.Report(&facets)
	rep, _ := json.Marshal(facets)
	places["report"] = string(rep)
	for where, text := range places {
		for _, tok := range tokens {
			if tok == "" {
				continue
			}
			if strings.Contains(text, tok) || strings.Contains(text, tok[:8]) {
				r.t.Errorf("%s contains a workspace token (or its prefix)", where)
			}
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newTenant(t *testing.T) *workspacetest.Tenant {
	t.Helper()
	ten := workspacetest.NewTenant(orgID)
	t.Cleanup(ten.Close)
	return ten
}
