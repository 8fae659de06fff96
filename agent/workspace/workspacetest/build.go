package workspacetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// RuntimePackage is the import path of the stand-in runtime.
const RuntimePackage = "github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest/standin-runtime"

// BuildRuntime builds the stand-in runtime with the go tool into dir and
// returns the binary's path. Tests call it once, from TestMain.
func BuildRuntime(goTool, dir string) (string, error) {
	out := filepath.Join(dir, "standin-runtime")
	cmd := exec.Command(goTool, "build", "-o", out, RuntimePackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", RuntimePackage, err, b)
	}
	return out, nil
}
