//go:build unix

package supervisor

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"sync"
)

const (
	// minRedactLen is the shortest value redacted from output: shorter ones
	// would blank out ordinary words and are not credentials anyway.
	minRedactLen = 6
	// minEncodedLen is the shortest encoded form (a base64 run) redacted.
	minEncodedLen = 8
	// maxRemembered bounds the values a Redactor remembers across
	// rotations; the oldest are forgotten first.
	maxRemembered = 1024
	redacted      = "[redacted]"
)

// Redactor removes secret values from output before it is logged: a child
// may print its own environment (cloudflared's usage text shows
// TUNNEL_TOKEN as a flag default), or another unit's secret it came by. A
// value is found verbatim, URL- or JSON-escaped, or base64-encoded (at any
// alignment inside a longer base64 run, standard or URL alphabet).
//
// A unit's Redactor holds the unit's own values (Set, before each start)
// and consults its parent, the agent-wide Redactor that remembers every
// value the secret store has held (Remember), current and previous.
type Redactor struct {
	parent *Redactor

	mu         sync.RWMutex
	values     []string // Set: replaced at each start
	remembered []string // Remember: kept across rotations, oldest first
	raw        []string // values and remembered, for cutting a truncated tail
	repl       *strings.Replacer
}

// NewRedactor returns a Redactor that also removes parent's values (parent
// may be nil).
func NewRedactor(parent *Redactor) *Redactor { return &Redactor{parent: parent} }

// Set replaces the values to redact (Remember's are kept).
func (r *Redactor) Set(values []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.values = r.values[:0]
	for _, v := range values {
		if len(v) >= minRedactLen {
			r.values = append(r.values, v)
		}
	}
	r.rebuild()
}

// Remember adds values to redact from now on; values already known are not
// added twice and none is forgotten on rotation (a previous value may still
// sit in a process's memory or a log line), up to the newest 1024.
func (r *Redactor) Remember(values []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	added := false
	for _, v := range values {
		if len(v) < minRedactLen || slices.Contains(r.remembered, v) {
			continue
		}
		r.remembered = append(r.remembered, v)
		added = true
	}
	if !added {
		return
	}
	if n := len(r.remembered) - maxRemembered; n > 0 {
		r.remembered = slices.Delete(r.remembered, 0, n)
	}
	r.rebuild()
}

// rebuild makes the replacer for the current values; r.mu is held.
func (r *Redactor) rebuild() {
	r.raw = append(append(r.raw[:0], r.values...), r.remembered...)
	var pats []string
	for _, v := range r.raw {
		pats = append(pats, forms(v)...)
	}
	slices.SortFunc(pats, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	pats = slices.Compact(pats)
	if len(pats) == 0 {
		r.repl = nil
		return
	}
	pairs := make([]string, 0, 2*len(pats))
	for _, p := range pats {
		pairs = append(pairs, p, redacted)
	}
	// Longest first: at one position the first matching pattern wins.
	r.repl = strings.NewReplacer(pairs...)
}

// forms returns the ways v may show up in output.
func forms(v string) []string {
	out := []string{v}
	if q := url.QueryEscape(v); q != v {
		out = append(out, q)
	}
	if b, err := json.Marshal(v); err == nil {
		if j := string(b[1 : len(b)-1]); j != v {
			out = append(out, j)
		}
	}
	// base64 of v inside a longer run: at each of the three byte
	// alignments, the characters that depend on v's bits alone.
	for shift := range 3 {
		buf := make([]byte, shift+len(v))
		copy(buf[shift:], v)
		enc := base64.StdEncoding.EncodeToString(buf)
		start, end := (8*shift+5)/6, 8*(shift+len(v))/6
		if end-start < minEncodedLen {
			continue
		}
		core := enc[start:end]
		out = append(out, core)
		if u := strings.NewReplacer("+", "-", "/", "_").Replace(core); u != core {
			out = append(out, u)
		}
	}
	return out
}

// Redact replaces every secret value in s with [redacted]. When truncated is
// set, a tail of s that begins a secret value is cut as well.
func (r *Redactor) Redact(s string, truncated bool) string {
	if r == nil {
		return s
	}
	r.mu.RLock()
	if r.repl != nil {
		s = r.repl.Replace(s)
	}
	if truncated {
		s = cutTail(s, r.raw)
	}
	r.mu.RUnlock()
	return r.parent.Redact(s, truncated)
}

// cutTail cuts a tail of s that is the start of one of values.
func cutTail(s string, values []string) string {
	for _, v := range values {
		for n := len(v) - 1; n >= minRedactLen; n-- {
			if strings.HasSuffix(s, v[:n]) {
				return s[:len(s)-n] + redacted
			}
		}
	}
	return s
}
