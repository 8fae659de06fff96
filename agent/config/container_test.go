//go:build unix

package config

import (
	"errors"
	"strings"
	"testing"
)

func TestContainerValidate(t *testing.T) {
	digest := "ghcr.io/molecule-ai/platform-tenant@sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		name      string
		c         Container
		wantField string // "" means valid
	}{
		{"minimal tag", Container{Image: "postgres:16"}, ""},
		{"digest, ports, volume", Container{Image: digest, Ports: []string{"127.0.0.1:8080:8080", "9090:90/udp", "[::1]:8081:8080"}, Volumes: []string{"molecule-pg:/var/lib/postgresql/data"}}, ""},
		{"missing image", Container{}, "units[2].container.image"},
		{"bad image", Container{Image: "UPPER/Case"}, "units[2].container.image"},
		{"host path volume", Container{Image: "x", Volumes: []string{"/etc:/etc"}}, "units[2].container.volumes[0]"},
		{"relative target", Container{Image: "x", Volumes: []string{"v:data"}}, "units[2].container.volumes[0]"},
		{"dup target", Container{Image: "x", Volumes: []string{"a:/d", "b:/d:ro"}}, "units[2].container.volumes[1]"},
		{"bad mount option", Container{Image: "x", Volumes: []string{"a:/d:rx"}}, "units[2].container.volumes[0]"},
		{"port without host", Container{Image: "x", Ports: []string{"8080"}}, "units[2].container.ports[0]"},
		{"port zero", Container{Image: "x", Ports: []string{"0:80"}}, "units[2].container.ports[0]"},
		{"bad host ip", Container{Image: "x", Ports: []string{"localhost:80:80"}}, "units[2].container.ports[0]"},
		{"dup host port", Container{Image: "x", Ports: []string{"80:80", "80:81"}}, "units[2].container.ports[1]"},
		{"private ip and loopback", Container{Image: "x", Ports: []string{"127.0.0.1:8080:8080", "${PRIVATE_IP}:8080:8080"}}, ""},
		{"unknown host variable", Container{Image: "x", Ports: []string{"${PUBLIC_IP}:8080:8080"}}, "units[2].container.ports[0]"},
		{"host variable without host port", Container{Image: "x", Ports: []string{"${PRIVATE_IP}:8080"}}, "units[2].container.ports[0]"},
		{"dup private ip port", Container{Image: "x", Ports: []string{"${PRIVATE_IP}:80:80", "${PRIVATE_IP}:80:81"}}, "units[2].container.ports[1]"},
		{"ports on host net", Container{Image: "x", Network: "host", Ports: []string{"80:80"}}, "units[2].container.ports"},
		{"bad network", Container{Image: "x", Network: "-x"}, "units[2].container.network"},
		{"secret in cmd", Container{Image: "x", Cmd: []string{"--token", "secret:t"}}, "units[2].container.cmd[1]"},
		{"bad user", Container{Image: "x", User: "a b"}, "units[2].container.user"},
		{"uid:gid", Container{Image: "x", User: "1000:1000"}, ""},
		{"bad update", Container{Image: "x", Update: "sometimes"}, "units[2].container.update"},
		{"bad registry auth", Container{Image: "x", RegistryAuth: "a b"}, "units[2].container.registry_auth"},
		{"healthcheck ok", Container{Image: "x", Healthcheck: &Healthcheck{Test: []string{"CMD-SHELL", "pg_isready"}}}, ""},
		{"healthcheck empty", Container{Image: "x", Healthcheck: &Healthcheck{}}, "units[2].container.healthcheck.test"},
		{"healthcheck bad kind", Container{Image: "x", Healthcheck: &Healthcheck{Test: []string{"RUN", "x"}}}, "units[2].container.healthcheck.test[0]"},
		{"healthcheck negative", Container{Image: "x", Healthcheck: &Healthcheck{Test: []string{"NONE"}, Retries: -1}}, "units[2].container.healthcheck.retries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.validate("units[2].container")
			var fe *FieldError
			switch {
			case tt.wantField == "" && err != nil:
				t.Fatalf("validate = %v, want nil", err)
			case tt.wantField != "" && !errors.As(err, &fe):
				t.Fatalf("validate = %v, want a FieldError at %s", err, tt.wantField)
			case tt.wantField != "" && fe.Path != tt.wantField:
				t.Fatalf("error path = %q (%v), want %q", fe.Path, err, tt.wantField)
			}
		})
	}
}

func TestContainerParsing(t *testing.T) {
	c := Container{Image: "x", Volumes: []string{"pg:/data:ro"}, Ports: []string{"127.0.0.1:8080:80", "53:53/udp", "[::1]:9:9"}}
	if got := c.Mounts(); len(got) != 1 || got[0] != (VolumeMount{Name: "pg", Path: "/data", ReadOnly: true}) {
		t.Errorf("Mounts = %+v", got)
	}
	want := []PortBinding{
		{HostIP: "127.0.0.1", HostPort: 8080, ContainerPort: 80, Proto: "tcp"},
		{HostPort: 53, ContainerPort: 53, Proto: "udp"},
		{HostIP: "::1", HostPort: 9, ContainerPort: 9, Proto: "tcp"},
	}
	got := c.Bindings()
	if len(got) != len(want) {
		t.Fatalf("Bindings = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Bindings[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if got := c.UpdatePolicy(); got != UpdateNever {
		t.Errorf("UpdatePolicy with volumes = %q, want never", got)
	}
	if got := (&Container{Image: "x"}).UpdatePolicy(); got != UpdateAuto {
		t.Errorf("UpdatePolicy without volumes = %q, want auto", got)
	}
}

func TestIsDigestPinned(t *testing.T) {
	d := "sha256:" + strings.Repeat("0", 64)
	tests := map[string]bool{
		"127.0.0.1:5000/test/app@" + d: true,
		"app@" + d:                     true,
		"app:v2@" + d:                  true,
		"app:v2":                       false,
		"app":                          false,
		"app@sha256:abc":               false,
		"":                             false,
	}
	for in, want := range tests {
		if got := IsDigestPinned(in); got != want {
			t.Errorf("IsDigestPinned(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestParsePrivateIPPort(t *testing.T) {
	b, err := ParsePort("${PRIVATE_IP}:8080:80/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if want := (PortBinding{HostIPFrom: HostPrivateIP, HostPort: 8080, ContainerPort: 80, Proto: "tcp"}); b != want {
		t.Errorf("ParsePort = %+v, want %+v", b, want)
	}
}

func FuzzContainerParse(f *testing.F) {
	for _, s := range []string{"${PRIVATE_IP}:1:2", "${PRIVATE_IP}}:1:2", "127.0.0.1:8080:80", "[::1]:1:2/udp", "a:/b:ro", "::::", "/", "x:/y:z:w", "1:2/tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if b, err := ParsePort(s); err == nil && (b.HostPort == 0 || b.ContainerPort == 0) {
			t.Errorf("ParsePort(%q) = %+v with a zero port", s, b)
		}
		if m, err := ParseVolume(s); err == nil && !strings.HasPrefix(m.Path, "/") {
			t.Errorf("ParseVolume(%q) = %+v with a relative path", s, m)
		}
		c := Container{Image: s, Ports: []string{s}, Volumes: []string{s}, Network: s, User: s}
		_ = c.validate("units[0].container")
		_ = IsDigestPinned(s)
	})
}
