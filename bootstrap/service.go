//go:build unix

package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	"github.com/kardianos/service"

	"github.com/molecule-ai/molecule-agent/packaging/systemd"
)

// unitPath is where kardianos/service installs a system unit.
const unitPath = "/etc/systemd/system/" + systemd.Name + ".service"

// program satisfies service.Interface; bootstrap only installs and
// controls the service, it never runs as it.
type program struct{}

func (program) Start(service.Service) error { return nil }
func (program) Stop(service.Service) error  { return nil }

// systemdRunning refuses to go on unless systemd is PID 1. kardianos
// would otherwise pick SysV init scripts or upstart and write into /etc.
func systemdRunning() error {
	comm, err := os.ReadFile("/proc/1/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "systemd" {
		return errors.New("systemd is not PID 1 here: bootstrap installs a systemd service; boot the host with systemd")
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return errors.New("systemd is not running (/run/systemd/system is missing)")
	}
	return nil
}

// installService installs and enables the unit when it is missing or
// differs from what this binary would install, and reports whether it
// changed anything.
func installService(exe string, args []string) (service.Service, bool, error) {
	if err := systemdRunning(); err != nil {
		return nil, false, err
	}
	want, err := systemd.Render(exe, args)
	if err != nil {
		return nil, false, err
	}
	svc, err := service.New(program{}, &service.Config{
		Name:        systemd.Name,
		DisplayName: systemd.Name,
		Description: "molecule host agent",
		Executable:  exe,
		Arguments:   args,
		Option:      service.KeyValue{"SystemdScript": systemd.Template()},
	})
	if err != nil {
		return nil, false, fmt.Errorf("service: %w", err)
	}
	if p := svc.Platform(); p != "linux-systemd" {
		return nil, false, fmt.Errorf("service manager is %s, not systemd: refusing to install", p)
	}
	old, err := os.ReadFile(unitPath)
	switch {
	case err == nil && string(old) == want:
		return svc, false, ensureEnabled()
	case err == nil:
		if err := svc.Uninstall(); err != nil {
			return nil, false, fmt.Errorf("replace %s: %w", unitPath, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("read %s: %w", unitPath, err)
	}
	if err := svc.Install(); err != nil {
		return nil, false, fmt.Errorf("install %s: %w", unitPath, err)
	}
	return svc, true, nil
}

func ensureEnabled() error {
	out, _ := exec.Command("systemctl", "is-enabled", systemd.Name+".service").Output()
	if strings.TrimSpace(string(out)) == "enabled" {
		return nil
	}
	if out, err := exec.Command("systemctl", "enable", systemd.Name+".service").CombinedOutput(); err != nil {
		return fmt.Errorf("systemctl enable %s: %v: %s", systemd.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// isActive reports whether systemd has the agent active.
func isActive() bool {
	out, _ := exec.Command("systemctl", "is-active", systemd.Name+".service").Output()
	return strings.TrimSpace(string(out)) == "active"
}

// startService (re)starts the agent unless it is active and nothing
// changed. For Type=notify, systemctl returns once the agent has sent
// READY=1 (or failed). It reports whether it (re)started the agent.
func startService(ctx context.Context, svc service.Service, changed bool) (bool, error) {
	if !changed && isActive() {
		return false, nil
	}
	if err := svc.Restart(); err != nil {
		return false, fmt.Errorf("%s.service did not start: %s; see journalctl -u %s", systemd.Name, lastLogLine(ctx), systemd.Name)
	}
	return true, nil
}

// lastLogLine returns the agent's last log line from the journal, which
// says why it stopped (the agent never logs a secret).
func lastLogLine(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "journalctl", "-u", systemd.Name, "-n", "20", "-o", "cat", "--no-pager").Output()
	if err != nil {
		return "no journal"
	}
	return pickLogLine(strings.Split(strings.TrimSpace(string(out)), "\n"))
}

// pickLogLine chooses the line that says why the agent stopped: its own
// fatal error ("molecule-agent: ..."), else its last line that is not
// systemd's own.
func pickLogLine(lines []string) string {
	for _, own := range []bool{true, false} {
		for i := len(lines) - 1; i >= 0; i-- {
			l := strings.TrimSpace(lines[i])
			if l == "" || strings.Contains(l, systemd.Name+".service") {
				continue
			}
			if own && !strings.HasPrefix(l, systemd.Name+": ") {
				continue
			}
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return "no log"
}
