//go:build unix

package supervisor

import (
	"strings"
	"sync"
)

// minRedactLen is the shortest value redacted from output: shorter ones
// would blank out ordinary words and are not credentials anyway.
const minRedactLen = 6

// Redactor removes a unit's secret values from its output before it is
// logged: a child may print its own environment (cloudflared's usage text
// shows TUNNEL_TOKEN as a flag default). The unit's preparation sets the
// values before each start.
type Redactor struct {
	mu     sync.RWMutex
	values []string
}

// Set replaces the values to redact.
func (r *Redactor) Set(values []string) {
	var keep []string
	for _, v := range values {
		if len(v) >= minRedactLen {
			keep = append(keep, v)
		}
	}
	r.mu.Lock()
	r.values = keep
	r.mu.Unlock()
}

// Redact replaces every secret value in s with [redacted]. When truncated is
// set, a tail of s that begins a secret value is cut as well.
func (r *Redactor) Redact(s string, truncated bool) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, v := range r.values {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, "[redacted]")
		}
		if truncated {
			for n := len(v) - 1; n >= minRedactLen; n-- {
				if strings.HasSuffix(s, v[:n]) {
					s = s[:len(s)-n] + "[redacted]"
					break
				}
			}
		}
	}
	return s
}
