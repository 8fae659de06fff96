package workspace_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPlatformContractPathsExist: every path of this repository that
// docs/platform-contract.md names exists (molecule-core's are marked
// "molecule-core:" and skipped).
func TestPlatformContractPathsExist(t *testing.T) {
	root := filepath.Join("..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docs", "platform-contract.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(molecule-core:)?`((?:agent|bootstrap|controlplane|packaging|docs)/[^`\\s]+)`")
	n := 0
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		if m[1] != "" {
			continue
		}
		n++
		p := strings.TrimSuffix(m[2], "/")
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("docs/platform-contract.md names %s, which does not exist", p)
		}
	}
	if n < 5 {
		t.Fatalf("found %d repo paths in docs/platform-contract.md; the pattern is broken", n)
	}
}
