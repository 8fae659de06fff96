package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestUnitSettings pins the settings the issue asks for, so an edit that
// drops one fails here rather than on a host.
func TestUnitSettings(t *testing.T) {
	for _, want := range []string{
		"Type=notify", "WatchdogSec=30s", "Restart=always", "RestartSec=1s",
		"TimeoutStopSec=90s", "KillMode=mixed",
		"After=network-online.target docker.service", "Wants=network-online.target docker.service",
		"ProtectSystem=full", "PrivateTmp=yes", "NoNewPrivileges=yes",
		"RuntimeDirectory=molecule-agent", "StateDirectory=molecule-agent",
		"ExecStart=/usr/local/bin/molecule-agent run --config /etc/molecule-agent/agent.yaml",
	} {
		if !hasLine(Unit, want) {
			t.Errorf("unit lacks line %q", want)
		}
	}
}

func hasLine(s, line string) bool {
	for _, l := range strings.Split(s, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestRender(t *testing.T) {
	got, err := Render("/opt/bin/molecule-agent", []string{"run", "--config", "/etc/x.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "ExecStart=/opt/bin/molecule-agent run --config /etc/x.yaml"; !hasLine(got, want) {
		t.Errorf("rendered unit lacks %q:\n%s", want, got)
	}
	if strings.Count(got, "ExecStart=") != 1 {
		t.Errorf("want one ExecStart line, got:\n%s", got)
	}
	if strings.Contains(got, "{{") {
		t.Errorf("template directives left in the rendered unit:\n%s", got)
	}
	// Apart from ExecStart the rendered unit is the shipped one.
	if a, b := execStartRE.ReplaceAllString(got, ""), execStartRE.ReplaceAllString(Unit, ""); a != b {
		t.Errorf("rendered unit differs beyond ExecStart")
	}
}

func TestCheckExec(t *testing.T) {
	tests := []struct {
		name string
		path string
		args []string
		ok   bool
	}{
		{"plain", "/usr/local/bin/molecule-agent", []string{"run", "--config", "/etc/molecule-agent/agent.yaml"}, true},
		{"relative", "molecule-agent", nil, false},
		{"space", "/opt/my bin/agent", nil, false},
		{"dollar", "/usr/bin/agent", []string{"$HOME"}, false},
		{"percent specifier", "/usr/bin/agent", []string{"%h"}, false},
		{"newline", "/usr/bin/agent", []string{"run\nExecStartPre=/bin/sh"}, false},
		{"quote", "/usr/bin/agent", []string{`"x"`}, false},
		{"empty arg", "/usr/bin/agent", []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckExec(tt.path, tt.args)
			if got := err == nil; got != tt.ok {
				t.Errorf("CheckExec(%q, %q) = %v, want ok=%v", tt.path, tt.args, err, tt.ok)
			}
		})
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the unit as
// bootstrap renders it (ExecStart pointing at a binary that exists here).
// verify exits 0 even for unknown keys or bad values, so any diagnostic
// about the file counts as a failure; the broken variants prove that.
func TestSystemdAnalyzeVerify(t *testing.T) {
	bin := testenv.RequireBinary(t, "systemd-analyze")
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Fatalf("no true binary: %v", err)
	}
	good, err := Render(truePath, []string{"run", "--config", "/etc/molecule-agent/agent.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		unit  string
		clean bool
	}{
		{"shipped unit", good, true},
		{"unknown key", strings.Replace(good, "Type=notify", "Tpe=notify", 1), false},
		{"bad value", strings.Replace(good, "Type=notify", "Type=notfy", 1), false},
		{"missing binary", strings.Replace(good, "ExecStart="+truePath, "ExecStart=/nonexistent/molecule-agent", 1), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, Name+".service")
			if err := os.WriteFile(path, []byte(tt.unit), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "verify", "--man=no", path)
			out, err := cmd.CombinedOutput()
			diag := diagnostics(string(out), path)
			clean := err == nil && len(diag) == 0
			if clean != tt.clean {
				t.Errorf("systemd-analyze verify clean = %v, want %v (err %v)\n%s", clean, tt.clean, err, out)
			}
		})
	}
}

// diagnostics keeps the lines of verify's output that concern the file
// (it may also complain about the host's own units, which are not ours).
func diagnostics(out, path string) []string {
	var d []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, path) || strings.Contains(l, Name+".service") {
			d = append(d, l)
		}
	}
	return d
}
