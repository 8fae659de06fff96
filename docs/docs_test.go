package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// mdLink is a Markdown link target: [text](target).
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// codePath is a backticked path from the repository's root.
	codePath = regexp.MustCompile("`((?:agent|bootstrap|controlplane|packaging|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_])`")
)

// TestNamedPathsExist fails for any link or backticked repository path in
// docs/*.md that does not exist.
func TestNamedPathsExist(t *testing.T) {
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no documents in docs/")
	}
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			checked++
			if _, err := os.Stat(filepath.Join(filepath.Dir(doc), target)); err != nil {
				t.Errorf("%s links to %s, which does not exist", doc, m[1])
			}
		}
		for _, m := range codePath.FindAllStringSubmatch(string(b), -1) {
			checked++
			if _, err := os.Stat(filepath.Join("..", m[1])); err != nil {
				t.Errorf("%s names %s, which does not exist", doc, m[1])
			}
		}
		if checked == 0 {
			t.Errorf("%s names no path: nothing checked", doc)
		}
	}
}

// TestDocsRequired: the documents the project promises exist.
func TestDocsRequired(t *testing.T) {
	for _, f := range []string{"architecture.md", "platform-contract.md", "security.md"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("docs/%s is missing: %v", f, err)
		}
	}
}
