//go:build unix

package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/google/uuid"
)

// inEmptyNetns re-runs this program under `unshare --net`: cloudflared tries
// the internet, and here only loopback exists.
func inEmptyNetns(agent, cloudflared string, kills int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	cmd := exec.Command("unshare", "--net", "--", self, "--in-netns", "--agent", abs(agent),
		"--cloudflared", abs(cloudflared), "--kills", fmt.Sprint(min(kills, 10)))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cloudflared measurement (needs root for unshare --net): %w", err)
	}
	return nil
}

// fakeToken is a syntactically valid tunnel token for a tunnel that does not exist.
func fakeToken() string {
	s := make([]byte, 32)
	_, _ = rand.Read(s)
	b, _ := json.Marshal(map[string]string{"a": "0123456789abcdef0123456789abcdef", "t": uuid.NewString(),
		"s": base64.StdEncoding.EncodeToString(s)})
	return base64.StdEncoding.EncodeToString(b)
}

// benchCloudflared measures a killed cloudflared until its metrics port
// answers again, supervised by the agent with an unreachable edge.
func benchCloudflared(agent, cloudflared string, kills int) error {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v %s", err, out)
	}
	dir, err := os.MkdirTemp("", "agent-bench-cf")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(dir+"/secrets.yaml", []byte("tunnel-token: "+fakeToken()+"\n"), 0o600); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`state_dir: %[1]s/state
run_dir: %[1]s/run
secrets: {source: file, file: %[1]s/secrets.yaml}
units:
  - name: cloudflared
    builtin: cloudflared
    command: %[2]s
    args: ["tunnel", "--no-autoupdate", "--metrics", "127.0.0.1:20241", "--grace-period", "1s", "--edge", "127.0.0.1:1", "run"]
    env: {TUNNEL_TOKEN: "secret:tunnel-token"}
    ready: {http: "http://127.0.0.1:20241/ready", interval: 1s}
    stop: {grace: 3s}
    restart: {stable_after: 500ms, no_restart_exit_codes: [255]}
`, dir, cloudflared)
	if err := os.WriteFile(dir+"/agent.yaml", []byte(cfg), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(agent, "run", "--config", dir+"/agent.yaml")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	recs := make(chan record, 1024)
	go scan(out, recs)
	var pid int
	for pid == 0 {
		r, err := next(recs)
		if err != nil {
			return err
		}
		if r.Msg == "unit started" {
			pid = pidOf(r.ID)
		}
	}
	if err := waitMetrics(10 * time.Second); err != nil {
		return err
	}
	var lat []time.Duration
	for range kills {
		time.Sleep(700 * time.Millisecond)
		killed := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			return err
		}
		for {
			r, err := next(recs)
			if err != nil {
				return err
			}
			if r.Msg == "unit started" {
				pid = pidOf(r.ID)
				break
			}
		}
		if err := waitMetrics(10 * time.Second); err != nil {
			return err
		}
		lat = append(lat, time.Since(killed))
	}
	slices.Sort(lat)
	fmt.Printf("| cloudflared killed → restarted and its metrics port answering (%d kills, real cloudflared 2026.7.1) | p50 %.0f ms, max %.0f ms | — |\n",
		len(lat), ms(pct(lat, 50)), ms(lat[len(lat)-1]))
	return nil
}

func waitMetrics(limit time.Duration) error {
	c := &http.Client{Timeout: 200 * time.Millisecond}
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if resp, err := c.Get("http://127.0.0.1:20241/ready"); err == nil {
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("cloudflared metrics port did not answer within %s", limit)
}
