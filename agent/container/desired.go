//go:build unix

package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

// ReadDesired reads a local desired-state file, a JSON object mapping unit
// names to digest-pinned images:
//
//	{"platform": "ghcr.io/molecule-ai/platform-tenant@sha256:…"}
//
// It lets an operator (or a test) drive updates without a control plane. A
// missing file is an empty desired state; a tag is refused, naming the unit.
func ReadDesired(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read desired state: %w", err)
	}
	return ParseDesired(b)
}

// ParseDesired parses the content of a desired-state file (see ReadDesired).
func ParseDesired(b []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("desired state is not a JSON object of unit → image: %w", err)
	}
	units := make([]string, 0, len(m))
	for u := range m {
		units = append(units, u)
	}
	sort.Strings(units)
	for _, u := range units {
		if !config.IsDigestPinned(m[u]) {
			return nil, fmt.Errorf("desired state for unit %q: %w: %q (use repo@sha256:<digest>)", u, ErrNotPinned, m[u])
		}
	}
	if m == nil {
		m = map[string]string{}
	}
	return m, nil
}
