//go:build unix

package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// The agent speaks sd_notify as systemd's Type=notify and WatchdogSec expect:
// READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 on SIGTERM.
func TestSdNotifyReadyWatchdogStopping(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := "state_dir: " + dir + "/state\nrun_dir: " + dir + "/run\nunits:\n  - {name: a, command: /bin/sleep, args: [\"1000\"]}\n"
	if err := os.WriteFile(dir+"/agent.yaml", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(agentBin, "run", "--config", dir+"/agent.yaml")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	var got []string
	buf := make([]byte, 4096)
	read := func(want string) {
		t.Helper()
		_ = conn.SetReadDeadline(time.Now().Add(testenv.Short))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v (got %v)", want, err, got)
			}
			got = append(got, string(buf[:n]))
			if strings.Contains(string(buf[:n]), want) {
				return
			}
		}
	}
	read("READY=1")
	read("WATCHDOG=1")
	read("WATCHDOG=1")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	read("STOPPING=1")
	if err := cmd.Wait(); err != nil {
		t.Errorf("agent exit: %v", err)
	}
}
