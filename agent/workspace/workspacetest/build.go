//go:build unix

package workspacetest

import "github.com/molecule-ai/molecule-agent/controlplane/api/testenv"

// RuntimePackage is the import path of the stand-in runtime.
const RuntimePackage = "github.com/molecule-ai/molecule-agent/agent/workspace/workspacetest/standin-runtime"

// BuildRuntime builds the stand-in runtime with the go tool into dir and
// returns the binary's path. Tests call it once, from TestMain.
func BuildRuntime(dir string) (string, error) {
	return testenv.GoBuild(dir, "standin-runtime", RuntimePackage)
}
