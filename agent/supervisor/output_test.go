//go:build unix

package supervisor

import (
	"encoding/json"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func records(t *testing.T, raw string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(raw), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

func TestOutputTruncatesLongLines(t *testing.T) {
	buf := &testenv.Buffer{}
	o := newOutputLogger(slog.New(slog.NewJSONHandler(buf, nil)), OutputLimits{MaxLineBytes: 100})
	in := strings.Repeat("a", 10_000) + "\nshort\n"
	o.copyLines(strings.NewReader(in), "stdout")
	recs := records(t, buf.String())
	if len(recs) != 2 {
		t.Fatalf("got %d records, want 2: %s", len(recs), buf.String())
	}
	if msg := recs[0]["msg"].(string); len(msg) > 100 || recs[0]["truncated"] != true {
		t.Errorf("first record: %d bytes, truncated=%v; want ≤ 100 and true", len(msg), recs[0]["truncated"])
	}
	if recs[1]["msg"] != "short" || recs[1]["stream"] != "stdout" {
		t.Errorf("second record = %v", recs[1])
	}
}

func TestOutputRateLimitCountsDrops(t *testing.T) {
	buf := &testenv.Buffer{}
	o := newOutputLogger(slog.New(slog.NewJSONHandler(buf, nil)), OutputLimits{LinesPerSecond: 1, Burst: 5})
	frozen := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.now = func() time.Time { return frozen } // no refill
	o.copyLines(strings.NewReader(strings.Repeat("line\n", 20)), "stderr")
	recs := records(t, buf.String())
	if len(recs) != 6 {
		t.Fatalf("got %d records, want 5 lines + 1 drop report: %s", len(recs), buf.String())
	}
	last := recs[5]
	if last["msg"] != "unit output rate-limited" || last["dropped_lines"] != float64(15) {
		t.Errorf("drop report = %v, want 15 dropped", last)
	}
	if o.Lines() != 20 {
		t.Errorf("Lines() = %d, want 20", o.Lines())
	}
}

func TestOutputRedactsSecretValues(t *testing.T) {
	buf := &testenv.Buffer{}
	o := newOutputLogger(slog.New(slog.NewJSONHandler(buf, nil)), OutputLimits{MaxLineBytes: 64})
	o.redact = &Redactor{}
	o.redact.Set([]string{"eyJhIjoiYWNjb3VudCJ9-token-value", "abc"}) // "abc" is too short to redact
	in := `--token value (default: "eyJhIjoiYWNjb3VudCJ9-token-value") [$TUNNEL_TOKEN] abc` + "\n" +
		strings.Repeat("x", 50) + "eyJhIjoiYWNjb3VudCJ9-token-value\n"
	o.copyLines(strings.NewReader(in), "stdout")
	out := buf.String()
	if strings.Contains(out, "eyJhIjoiYWNjb3VudCJ9") {
		t.Errorf("secret (or its start) logged: %s", out)
	}
	if !strings.Contains(out, `(default: \"[redacted]\")`) {
		t.Errorf("want the value redacted: %s", out)
	}
	if got := o.redact.Redact("abc def", false); got != "abc def" {
		t.Errorf("short value redacted: %q", got)
	}
}
