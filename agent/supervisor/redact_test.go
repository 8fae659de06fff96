//go:build unix

package supervisor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestRedactorForms(t *testing.T) {
	const own, other, old = "own-secret-value-1", "other+unit/secret?value=2", "rotated-away-value-3"
	agent := NewRedactor(nil)
	agent.Remember([]string{other, old})
	agent.Remember([]string{other, "new-value-after-rotation"}) // old stays remembered
	unit := NewRedactor(agent)
	unit.Set([]string{own, "short"})

	b64 := func(prefix, v string) string { return base64.StdEncoding.EncodeToString([]byte(prefix + v)) }
	jsonOf := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	for _, tc := range []struct{ name, in, gone string }{
		{"own value", "token=" + own + " ok", own},
		{"another unit's value", "stolen " + other, other},
		{"a value rotated away", "old " + old, old},
		{"URL-escaped", "GET /?t=" + url.QueryEscape(other), url.QueryEscape(other)},
		{"JSON-escaped", `{"v":` + jsonOf(other+`"quoted"`) + `}`, "other+unit"},
		{"base64 alone", "Basic " + b64("", own), b64("", own)[:12]},
		{"base64 after one byte", "x " + b64("u", own), b64("u", own)[4:16]},
		{"base64 after two bytes", "x " + b64("us", own), b64("us", own)[4:16]},
		{"base64 of user:password", "Authorization: Basic " + b64("admin:", old), b64("admin:", old)[10:20]},
		{"URL-safe base64", "x " + base64.URLEncoding.EncodeToString([]byte("??"+other)), base64.URLEncoding.EncodeToString([]byte("??" + other))[4:16]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "JSON-escaped" {
				unit.Set([]string{own, other + `"quoted"`})
				defer unit.Set([]string{own})
			}
			got := unit.Redact(tc.in, false)
			if strings.Contains(got, tc.gone) {
				t.Errorf("Redact(%q) = %q, still holds %q", tc.in, got, tc.gone)
			}
			if !strings.Contains(got, "[redacted]") {
				t.Errorf("Redact(%q) = %q, want [redacted] in it", tc.in, got)
			}
		})
	}
	for _, keep := range []string{"short words stay", "the base64 of nothing: aGVsbG8gd29ybGQ="} {
		if got := unit.Redact(keep, false); got != keep {
			t.Errorf("Redact(%q) = %q, want it unchanged", keep, got)
		}
	}
	if got := unit.Redact("cut at "+other[:10], true); strings.Contains(got, other[:10]) {
		t.Errorf("a truncated line ending in the start of a remembered value kept it: %q", got)
	}
}

func TestRedactorRemembersABoundedNumber(t *testing.T) {
	r := NewRedactor(nil)
	for i := range maxRemembered + 10 {
		r.Remember([]string{"value-number-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strings.Repeat("y", i/26)})
	}
	r.mu.RLock()
	n := len(r.remembered)
	r.mu.RUnlock()
	if n != maxRemembered {
		t.Errorf("remembered %d values, want %d", n, maxRemembered)
	}
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

// TestHandlerRedactsAgentLogs: the agent's own log records lose every value
// the agent-wide Redactor knows, wherever the value sits in the record.
func TestHandlerRedactsAgentLogs(t *testing.T) {
	const v = "agent-held-secret-42"
	r := NewRedactor(nil)
	r.Remember([]string{v})
	buf := &testenv.Buffer{}
	log := slog.New(r.Handler(slog.NewJSONHandler(buf, nil)))
	log.With("with", "pre "+v).WithGroup("g").Info("message "+v,
		"str", v, "err", errors.New("dial: "+v), "stringer", stringer{v},
		"list", []string{"a", v}, "map", map[string]string{"k": v},
		slog.Group("inner", "x", v), "n", 42)
	out := buf.String()
	if strings.Contains(out, v) {
		t.Fatalf("secret in the agent's log: %s", out)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, out)
	}
	if got := strings.Count(out, "[redacted]"); got != 8 {
		t.Errorf("%d redactions, want 8 (msg, with, str, err, stringer, list, map, inner.x): %s", got, out)
	}
	if !strings.Contains(out, `"n":42`) {
		t.Errorf("a number attribute was changed: %s", out)
	}
}
