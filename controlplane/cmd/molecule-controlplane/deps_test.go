package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestControlPlaneImportsNothingOfTheAgent: the control plane (every
// package under controlplane/) links nothing under agent/ and not the
// bootstrap command; what both sides share sits under controlplane/api and
// in bootstrap/hostparams (docs/architecture.md).
func TestControlPlaneImportsNothingOfTheAgent(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/molecule-ai/molecule-agent/controlplane/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list -deps gave only %d packages", len(deps))
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "github.com/molecule-ai/molecule-agent/agent/") ||
			d == "github.com/molecule-ai/molecule-agent/bootstrap" {
			t.Errorf("the control plane links %s", d)
		}
	}
}
