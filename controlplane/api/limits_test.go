package api

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateNamesTheField(t *testing.T) {
	ok := HeartbeatRequest{AgentVersion: "1.0", BootID: "b", Units: []UnitStatus{{Name: "platform", State: UnitReady,
		Detail: "line one\n\tline two"}}, Tunnel: &TunnelStatus{ID: "3f2a"}, Boot: []BootStep{{Step: "units"}},
		Updates: []UpdateStatus{{Unit: "platform", Digest: "sha256:ab", Phase: "committed"}}}
	if e := ValidateHeartbeat(ok); e != nil {
		t.Fatalf("valid heartbeat refused: %v", e)
	}
	hb := func(mut func(*HeartbeatRequest)) HeartbeatRequest {
		b, _ := json.Marshal(ok)
		var h HeartbeatRequest
		_ = json.Unmarshal(b, &h)
		mut(&h)
		return h
	}
	tests := []struct {
		name  string
		h     HeartbeatRequest
		field string
	}{
		{"250 KB unit name", hb(func(h *HeartbeatRequest) { h.Units[0].Name = strings.Repeat("u", 250<<10) }), "units[0].name"},
		{"invalid UTF-8", hb(func(h *HeartbeatRequest) { h.Units[0].Detail = "bad \xff byte" }), "units[0].detail"},
		{"escape sequence", hb(func(h *HeartbeatRequest) { h.Units[0].Detail = "\x1b[31mred" }), "units[0].detail"},
		{"newline in a name", hb(func(h *HeartbeatRequest) { h.Units[0].Name = "a\nb" }), "units[0].name"},
		{"C1 control", hb(func(h *HeartbeatRequest) { h.AgentVersion = "1\u0085" }), "agent_version"},
		{"line separator", hb(func(h *HeartbeatRequest) { h.BootID = "b\u2028" }), "boot_id"},
		{"long tunnel ID", hb(func(h *HeartbeatRequest) { h.Tunnel.ID = strings.Repeat("t", MaxTunnelIDBytes+1) }), "tunnel.id"},
		{"NUL in a digest", hb(func(h *HeartbeatRequest) { h.Updates[0].Digest = "sha256:\x00" }), "updates[0].digest"},
		{"long boot step", hb(func(h *HeartbeatRequest) { h.Boot[0].Step = strings.Repeat("s", MaxBootStepBytes+1) }), "boot[0].step"},
		{"too many units", hb(func(h *HeartbeatRequest) { h.Units = make([]UnitStatus, MaxUnits+1) }), "units"},
		{"long detail", hb(func(h *HeartbeatRequest) { h.Interruption = strings.Repeat("i", MaxDetailBytes+1) }), "interruption"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ValidateHeartbeat(tt.h)
			if e == nil || e.Field != tt.field || !strings.HasPrefix(e.Error(), tt.field+": ") {
				t.Errorf("ValidateHeartbeat = %v, want an error naming %s", e, tt.field)
			}
		})
	}
	reg := []struct {
		r     RegisterRequest
		field string
	}{
		{RegisterRequest{BootID: "b", Hostname: "host\r\nX-Injected: 1"}, "hostname"},
		{RegisterRequest{BootID: "b", Org: "acme\xc0"}, "org"},
		{RegisterRequest{BootID: strings.Repeat("b", MaxIDBytes+1)}, "boot_id"},
		{RegisterRequest{BootID: "b", IdentityPKCS7: "MIIB\x07"}, "identity_pkcs7"},
	}
	for _, tt := range reg {
		if e := ValidateRegisterStrings(tt.r); e == nil || e.Field != tt.field {
			t.Errorf("ValidateRegisterStrings(%q) = %v, want an error naming %s", tt.field, e, tt.field)
		}
	}
	if e := ValidateRegisterStrings(RegisterRequest{BootID: "b", IdentityPKCS7: "MIIB\nAAAA\r\n", IdentityDocument: "{\n  \"a\": 1\n}"}); e != nil {
		t.Errorf("IMDS's line-broken PKCS#7 and pretty document refused: %v", e)
	}
}

// FuzzLimits: no input panics the validation; what it accepts is within
// every cap, valid UTF-8 and free of controls outside free text; and the
// client's ClampHeartbeat makes any free text acceptable.
func FuzzLimits(f *testing.F) {
	for _, s := range []string{"", "ok", "a\nb", "\xff", "\x1b[2J", strings.Repeat("é", 600), "\u2028", "\t"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, name, detail string) {
		h := HeartbeatRequest{BootID: name, Units: []UnitStatus{{Name: name, State: name, Detail: detail}},
			Updates: []UpdateStatus{{Unit: name, Detail: detail}}, Interruption: detail, Tunnel: &TunnelStatus{ID: name}}
		if ValidateHeartbeat(h) == nil {
			for _, s := range []string{name, detail} {
				if !utf8.ValidString(s) {
					t.Fatalf("accepted invalid UTF-8 %q", s)
				}
			}
			if len(name) > MaxTunnelIDBytes || len(detail) > MaxDetailBytes {
				t.Fatalf("accepted over the caps: %d, %d bytes", len(name), len(detail))
			}
			for _, r := range name {
				if isControl(r) {
					t.Fatalf("accepted control %U in a name", r)
				}
			}
		}
		c := ClampHeartbeat(HeartbeatRequest{Units: []UnitStatus{{Name: "u", State: "failed", Detail: detail}},
			Updates: []UpdateStatus{{Unit: "u", Detail: detail}}, Interruption: detail})
		if e := ValidateHeartbeat(c); e != nil {
			t.Fatalf("a clamped heartbeat is refused: %v (detail %q)", e, detail)
		}
		_ = ValidateRegisterStrings(RegisterRequest{IdentityPKCS7: detail, IdentityDocument: detail, Hostname: name, Org: name, BootID: name})
	})
}

func TestInvalidUTF8Field(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{`{"units":[{"name":"a","detail":"ok"},{"name":"b","detail":"bad ` + "\xff" + `"}]}`, "units[1].detail"},
		{`{"boot_id":"b` + "\xc0" + `","units":[]}`, "boot_id"},
		{`{"tunnel":{"id":"` + "\xed\xa0\x80" + `"}}`, "tunnel.id"},
		{`{"k` + "\xff" + `":1}`, "k\uFFFD"},
		{`{"units":["a", "` + "\xff" + `"]}`, "units[1]"},
		{"\xff", "body"},
		{`{"units":[{"name":"é"}]}`, ""},
	} {
		if got := InvalidUTF8Field([]byte(tt.body)); got != tt.want {
			t.Errorf("InvalidUTF8Field(%q) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

func FuzzInvalidUTF8Field(f *testing.F) {
	for _, s := range []string{`{"a":"\xff"}`, `[1,"\xc0",{"b":["\xed\xa0\x80"]}]`, `{"a":`, "\xff\xfe", `{"units":[{"name":"x"}]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := InvalidUTF8Field(b)
		if (got == "") != utf8.Valid(b) {
			t.Fatalf("InvalidUTF8Field(%q) = %q, but utf8.Valid = %v", b, got, utf8.Valid(b))
		}
	})
}
