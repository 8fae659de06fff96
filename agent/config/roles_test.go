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
