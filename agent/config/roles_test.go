//go:build unix

package config

import (
	"strings"
	"testing"
)

func TestBuiltinRolesLoadAndValidate(t *testing.T) {
	for _, role := range Roles() {
		t.Run(role, func(t *testing.T) {
			c, err := Parse(strings.NewReader("role: " + role + "\nsecrets:\n  source: ssm\n  prefix: /molecule/prod/tenants/acme\n"))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Units) == 0 {
				t.Fatal("role has no units")
			}
		})
	}
	if got := strings.Join(Roles(), ","); got != "tenant,workspace" {
		t.Errorf("Roles() = %s, want tenant,workspace", got)
	}
}

// TestBuiltinPortsNeverOnEveryAddress: every port a built-in role
// publishes names its host address (loopback or ${PRIVATE_IP}).
func TestBuiltinPortsNeverOnEveryAddress(t *testing.T) {
	for _, role := range Roles() {
		c, err := Parse(strings.NewReader("role: " + role + "\nsecrets:\n  source: ssm\n  prefix: /molecule/prod/tenants/acme\n"))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range c.Units {
			if u.Container == nil {
				continue
			}
			for _, b := range u.Container.Bindings() {
				if b.HostIP == "" && b.HostIPFrom == "" || b.HostIP == "0.0.0.0" || b.HostIP == "::" {
					t.Errorf("role %s unit %s publishes port %d on every address", role, u.Name, b.HostPort)
				}
			}
		}
	}
	c, _ := Parse(strings.NewReader("role: tenant\n"))
	for _, u := range c.Units {
		if u.Name == "platform" {
			if got := strings.Join(u.Container.Ports, " "); got != "127.0.0.1:8080:8080 ${PRIVATE_IP}:8080:8080" {
				t.Errorf("platform ports = %s, want loopback and the private address", got)
			}
		}
	}
}

func TestRoleUnitsAreOverriddenByKeyAndExtended(t *testing.T) {
	c, err := Parse(strings.NewReader(`
role: tenant
units:
  - name: platform
    container:
      image: ghcr.io/molecule-ai/platform-tenant@sha256:` + strings.Repeat("a", 64) + `
      network: molecule
  - name: extra
    command: /bin/true
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range c.Units {
		names = append(names, u.Name)
	}
	if got := strings.Join(names, ","); got != "postgres,redis,platform,cloudflared,extra" {
		t.Errorf("units = %s", got)
	}
	p := c.Unit("platform")
	if !strings.Contains(p.Container.Image, "@sha256:") {
		t.Errorf("override lost: image %s", p.Container.Image)
	}
	if p.Env["MOLECULE_ENV"] != "production" || p.Ready == nil || len(p.After) != 2 {
		t.Errorf("keys the override did not set must keep the role's values: env %v ready %v after %v", p.Env, p.Ready, p.After)
	}
	if r := c.Unit("redis"); !strings.Contains(strings.Join(r.Container.Cmd, " "), "--notify-keyspace-events KEA") {
		t.Errorf("redis cmd = %v", r.Container.Cmd)
	}
}

func TestRoleOverrideErrorsStillNameTheField(t *testing.T) {
	_, err := Parse(strings.NewReader("role: tenant\nunits:\n  - name: platform\n    stop: {grace: -1s}\n"))
	if err == nil || !strings.Contains(err.Error(), "units[2].stop.grace: must be positive") {
		t.Errorf("err = %v", err)
	}
	_, err = Parse(strings.NewReader("role: tenant\nunits:\n  - name: platform\n    colour: red\n"))
	if err == nil || !strings.Contains(err.Error(), "field colour not found") {
		t.Errorf("err = %v", err)
	}
}

// The workspace token file is an ordinary unit file at the configured
// configs_dir, the only one, and workspace.secrets are secret: env
// references: no other road carries them to the runtime.
func TestWorkspaceTokenFileFollowsConfigsDir(t *testing.T) {
	tests := []struct {
		name, section, wantPath string
	}{
		{"default", "", DefaultWorkspaceConfigsDir + "/" + WorkspaceTokenFile},
		{"non-default", "\n  configs_dir: /srv/ws/configs", "/srv/ws/configs/" + WorkspaceTokenFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader("role: workspace\nworkspace:\n  id: w1\n  platform_url: https://t.example" +
				tt.section + "\n  secrets: {OPENAI_API_KEY: openai-key}\n"))
			if err != nil {
				t.Fatal(err)
			}
			u := c.Unit("runtime")
			if u == nil {
				t.Fatal("no runtime unit")
			}
			want := []File{{Path: tt.wantPath, Content: SecretPrefix + WorkspaceTokenSecret, Owner: OwnerUnit}}
			if len(u.Files) != 1 || u.Files[0] != want[0] {
				t.Errorf("runtime files = %+v, want exactly %+v", u.Files, want)
			}
			if got := u.Env["OPENAI_API_KEY"]; got != SecretPrefix+"openai-key" {
				t.Errorf("runtime env OPENAI_API_KEY = %q, want secret:openai-key", got)
			}
			refs := strings.Join(u.SecretRefs(), ",")
			for _, ref := range []string{WorkspaceTokenSecret, "openai-key"} {
				if !strings.Contains(refs, ref) {
					t.Errorf("SecretRefs %s lack %s: a rotation would not restart the runtime", refs, ref)
				}
			}
		})
	}
}

func TestFileOwnerIsValidated(t *testing.T) {
	base := "units:\n  - name: a\n    command: /bin/true\n    files:\n      - {path: /run/x/tok, content: \"secret:tok\", owner: %s}\n"
	for _, owner := range []string{"agent", "unit"} {
		if _, err := Parse(strings.NewReader(strings.Replace(base, "%s", owner, 1))); err != nil {
			t.Errorf("owner %s: %v", owner, err)
		}
	}
	_, err := Parse(strings.NewReader(strings.Replace(base, "%s", "kept", 1)))
	if err == nil || !strings.Contains(err.Error(), "units[0].files[0].owner") {
		t.Errorf("owner kept: err = %v, want one naming units[0].files[0].owner", err)
	}
}
