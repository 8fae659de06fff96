//go:build unix

package bootstrap

import (
	"encoding/base64"
	"os/exec"
	"strings"
	"testing"
)

func validParams() Params {
	return Params{Role: "tenant", Org: "acme", ControlPlane: "https://fleet.example",
		SSMPrefix: "/molecule/prod/tenants/acme"}
}

func TestRenderUserData(t *testing.T) {
	tests := []struct {
		name string
		p    Params
		want string
	}{
		{"tenant", validParams(),
			"#!/bin/sh\nexec /usr/local/bin/molecule-agent bootstrap --role tenant --org acme --control-plane https://fleet.example --ssm-prefix /molecule/prod/tenants/acme\n"},
		{"workspace with channel", Params{Role: "workspace", Org: "acme", Workspace: "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8", PlatformURL: "https://acme.molecule.example", Channel: "staging"},
			"#!/bin/sh\nexec /usr/local/bin/molecule-agent bootstrap --role workspace --org acme --workspace 3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8 --platform-url https://acme.molecule.example --channel staging\n"},
		{"enrollment off EC2", Params{Role: "tenant", Org: "dev", Identity: "enrollment", ControlPlane: "https://10.0.0.1:8443", ControlPlaneCA: "/etc/molecule-agent/cp-ca.pem"},
			"#!/bin/sh\nexec /usr/local/bin/molecule-agent bootstrap --role tenant --org dev --control-plane https://10.0.0.1:8443 --control-plane-ca /etc/molecule-agent/cp-ca.pem --identity enrollment\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RenderUserData(tt.p)
			if err != nil {
				t.Fatalf("RenderUserData: %v", err)
			}
			if got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if strings.Contains(got, "set -") || strings.Contains(got, "sh -x") {
				t.Errorf("user-data enables shell options (tracing?):\n%s", got)
			}
		})
	}
}

// Secret-looking values, each put in a field that would otherwise accept
// it, must be refused; the error names the flag but never the value.
func TestRenderUserDataRefusesSecrets(t *testing.T) {
	cfToken := base64.StdEncoding.EncodeToString([]byte(`{"a":"0123456789abcdef0123456789abcdef","t":"d2b8f4c2-1f6e-4b3a-9c7d-5e8f0a1b2c3d","s":"c2VjcmV0c2VjcmV0c2VjcmV0"}`))
	tests := []struct {
		name, flag string
		set        func(*Params, string)
		value      string
	}{
		{"aws key in workspace", "workspace", func(p *Params, v string) { p.Workspace = v }, "AKIAIOSFODNN7EXAMPLE"},
		{"jwt in path", "control-plane", func(p *Params, v string) { p.ControlPlane = v },
			"https://fleet.example/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.abcdefghijk"},
		{"cloudflared token in path", "control-plane", func(p *Params, v string) { p.ControlPlane = v }, "https://fleet.example/" + strings.TrimRight(cfToken, "=")},
		{"random token in ssm prefix", "ssm-prefix", func(p *Params, v string) { p.SSMPrefix = v }, "/molecule/prod/Xk9fQ2mZ7pL4vR8tW1yB3nC6"},
		{"hex token as workspace", "workspace", func(p *Params, v string) { p.Workspace = v }, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
		{"github token as workspace", "workspace", func(p *Params, v string) { p.Workspace = v }, "ghp_abcdefghijklmnopqrstuvwxyz0123456789"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validParams()
			tt.set(&p, tt.value)
			got, err := RenderUserData(p)
			if err == nil {
				t.Fatalf("RenderUserData accepted %s; user-data:\n%s", tt.name, got)
			}
			if !strings.Contains(err.Error(), "--"+tt.flag) {
				t.Errorf("error %q does not name --%s", err, tt.flag)
			}
			if strings.Contains(err.Error(), tt.value) {
				t.Errorf("error quotes the secret: %q", err)
			}
		})
	}
}

func TestLooksSecret(t *testing.T) {
	tests := []struct {
		v      string
		secret bool
	}{
		{"acme", false},
		{"tenant", false},
		{"https://fleet.example.com:8443/api/v1", false},
		{"/molecule/prod/tenants/acme-corporation-international", false},
		{"3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8", false},
		{"ws-2024-production-east", false},
		{"us-east-2", false},
		{"stable", false},
		{"/etc/molecule-agent/enrollment-token", false},
		{"AKIAIOSFODNN7EXAMPLE", true},
		{"ASIAY34FZKBOKMUTVV7A", true},
		{"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", true},
		{"-----BEGIN OPENSSH PRIVATE KEY-----", true},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", true},
		{"eyJhIjoiYWJjIiwidCI6ImRlZiIsInMiOiJnaGkifQ==", true},
		{"Xk9fQ2mZ7pL4vR8tW1yB3nC6", true},
		{"k3j9x2m8q7w4z5n1b6v0c8x7z2l4", true},
		{"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", true},
		{"xoxb-123456789012-abcdefghijklmnop", true},
	}
	for _, tt := range tests {
		t.Run(tt.v, func(t *testing.T) {
			reason, got := LooksSecret(tt.v)
			if got != tt.secret {
				t.Errorf("LooksSecret(%q) = %v (%s), want %v", tt.v, got, reason, tt.secret)
			}
			if got && strings.Contains(reason, tt.v) {
				t.Errorf("reason quotes the value: %q", reason)
			}
		})
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Params)
		wantErr string // substring; "" = valid
	}{
		{"valid", func(*Params) {}, ""},
		{"no role", func(p *Params) { p.Role = "" }, "--role"},
		{"bad role", func(p *Params) { p.Role = "admin" }, "--role"},
		{"bad org", func(p *Params) { p.Org = "Acme Corp" }, "--org"},
		{"workspace role needs id", func(p *Params) { p.Role = "workspace" }, "--workspace"},
		{"workspace role needs platform", func(p *Params) { p.Role = "workspace"; p.Workspace = "ws-1" }, "--platform-url"},
		{"ftp control plane", func(p *Params) { p.ControlPlane = "ftp://x" }, "--control-plane"},
		{"plain http control plane", func(p *Params) { p.ControlPlane = "http://10.0.0.1:7070" }, "--control-plane: \"http://10.0.0.1:7070\" is plain HTTP off loopback: use https://"},
		{"relative control plane CA", func(p *Params) { p.ControlPlaneCA = "ca.pem" }, "--control-plane-ca"},
		{"credentials in url", func(p *Params) { p.ControlPlane = "https://u:pw@fleet.example" }, "must not carry credentials"},
		{"query in url", func(p *Params) { p.ControlPlane = "https://fleet.example/?token=x" }, "--control-plane"},
		{"relative prefix", func(p *Params) { p.SSMPrefix = "molecule/prod" }, "--ssm-prefix"},
		{"bad channel", func(p *Params) { p.Channel = "Stable!" }, "--channel"},
		{"bad region", func(p *Params) { p.Region = "mars" }, "--region"},
		{"bad identity", func(p *Params) { p.Identity = "password" }, "--identity"},
		{"enrollment ssm needs region", func(p *Params) { p.Identity = "enrollment" }, "--region"},
		{"relative units file", func(p *Params) { p.UnitsFile = "units.yaml" }, "--units-file"},
		{"bad org id", func(p *Params) { p.OrgID = "org id; rm" }, "--org-id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validParams()
			tt.mutate(&p)
			err := p.WithDefaults().Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate: %v, want ok", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
	if err := (Params{Role: "tenant", Org: "acme", ControlPlane: "https://u:hunter2@x"}).Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("credentials URL: got %v, want an error without the password", err)
	}
}

// TestShellQuote checks the quoting against a real shell.
func TestShellQuote(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, v := range []string{"plain", "with space", "it's", `$HOME`, "`id`", "a\nb", `back\slash`, "''", "*", "-n"} {
		t.Run(v, func(t *testing.T) {
			out, err := exec.Command(sh, "-c", "printf '%s' "+ShellQuote(v)).Output()
			if err != nil {
				t.Fatalf("sh: %v", err)
			}
			if string(out) != v {
				t.Errorf("sh saw %q, want %q (quoted %s)", out, v, ShellQuote(v))
			}
		})
	}
}

func FuzzRenderUserData(f *testing.F) {
	f.Add("tenant", "acme", "", "https://fleet.example", "/molecule/prod/tenants/acme", "stable")
	f.Add("workspace", "acme", "3f2a1c9e-8b7d-4e6f-a5b4-c3d2e1f0a9b8", "https://acme.example", "", "staging")
	f.Add("tenant", "acme", "AKIAIOSFODNN7EXAMPLE", "https://x/eyJhIjoiYiJ9", "/a/'b", "s")
	f.Fuzz(func(t *testing.T, role, org, ws, cp, prefix, channel string) {
		p := Params{Role: role, Org: org, Workspace: ws, ControlPlane: cp, PlatformURL: cp, SSMPrefix: prefix, Channel: channel}
		ud, err := RenderUserData(p)
		if err != nil {
			return
		}
		lines := strings.Split(strings.TrimSuffix(ud, "\n"), "\n")
		if len(lines) != 2 || lines[0] != "#!/bin/sh" || !strings.HasPrefix(lines[1], "exec "+AgentPath+" bootstrap ") {
			t.Fatalf("malformed user-data:\n%s", ud)
		}
		for _, v := range []string{role, org, ws, cp, prefix, channel} {
			if _, bad := LooksSecret(v); bad {
				t.Fatalf("rendered a secret-looking value %q", v)
			}
		}
	})
}

func FuzzLooksSecret(f *testing.F) {
	for _, s := range []string{"acme", "AKIAIOSFODNN7EXAMPLE", "eyJhIjoiYiJ9", "-----BEGIN", "/a/b/c", "Xk9fQ2mZ7pL4vR8tW1yB3nC6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		r1, ok1 := LooksSecret(v)
		r2, ok2 := LooksSecret(v)
		if ok1 != ok2 || r1 != r2 {
			t.Fatalf("LooksSecret not deterministic on %q", v)
		}
		if ok1 && r1 == "" {
			t.Fatalf("secret without a reason for %q", v)
		}
		// Quoting any value survives a round trip through the single-quote rules.
		if q := ShellQuote(v); q != v && !(strings.HasPrefix(q, "'") && strings.HasSuffix(q, "'")) {
			t.Fatalf("ShellQuote(%q) = %q", v, q)
		}
	})
}
