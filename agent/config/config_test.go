//go:build unix

package config

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

const minimal = `
units:
  - name: web
    command: /bin/true
`

func TestParseMinimalAppliesDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	u := c.Units[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"kind", u.Kind, KindExec},
		{"stop.signal", u.Stop.Signal, "SIGTERM"},
		{"stop.grace", u.Stop.Grace.Duration, DefaultStopGrace},
		{"restart.policy", u.Restart.Policy, "always"},
		{"restart.initial_delay", u.Restart.InitialDelay.Duration, DefaultInitialDelay},
		{"restart.max_delay", u.Restart.MaxDelay.Duration, DefaultMaxDelay},
		{"restart.budget", u.Restart.Budget, DefaultBudget},
		{"state_dir", c.StateDir, DefaultStateDir},
		{"socket", c.SocketPath(), DefaultRunDir + "/agent.sock"},
		{"secrets.refresh", c.Secrets.Refresh.Duration, DefaultRefresh},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestExampleFilesLoad(t *testing.T) {
	for _, path := range []string{"agent.example.yaml"} {
		c, err := Load(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(c.Units) == 0 {
			t.Errorf("%s: no units", path)
		}
	}
}

func TestInvalidConfigsNameTheField(t *testing.T) {
	unit := func(extra string) string {
		return "units:\n  - name: a\n    command: /bin/true\n" + extra
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top key", "colour: red\n", "field colour not found"},
		{"unknown unit key", unit("    comand: x\n"), "field comand not found"},
		{"bad role", "role: db\n", "role: \"db\" is not a role"},
		{"bad unit name", "units:\n  - name: Web_1\n    command: x\n", "units[0].name"},
		{"duplicate name", unit("  - name: a\n    command: /bin/true\n"), "units[1].name: \"a\" is already used by units[0]"},
		{"missing command", "units:\n  - name: a\n", "units[0].command: is required"},
		{"bad kind", unit("    kind: vm\n"), "units[0].kind"},
		{"max below initial", unit("    restart:\n      initial_delay: 2s\n      max_delay: 1s\n"), "units[0].restart.max_delay: must be ≥ initial_delay"},
		{"bad duration", unit("    stop:\n      grace: ten\n"), "\"ten\" is not a duration"},
		{"negative grace", unit("    stop:\n      grace: -1s\n"), "units[0].stop.grace: must be positive"},
		{"bad signal", unit("    stop:\n      signal: SIGFOO\n"), "units[0].stop.signal"},
		{"bad policy", unit("    restart:\n      policy: sometimes\n"), "units[0].restart.policy"},
		{"bad exit code", unit("    restart:\n      no_restart_exit_codes: [300]\n"), "units[0].restart.no_restart_exit_codes[0]"},
		{"unknown dependency", unit("    after: [db]\n"), "units[0].after[0]: no unit named \"db\""},
		{"self dependency", unit("    after: [a]\n"), "units[0].after[0]: unit cannot depend on itself"},
		{"cycle", "units:\n  - name: a\n    command: x\n    after: [b]\n  - name: b\n    command: x\n    after: [a]\n", "dependency cycle: a → b → a"},
		{"probe both", unit("    ready:\n      http: http://127.0.0.1:1/\n      tcp: 127.0.0.1:1\n"), "units[0].ready: set one of http, tcp or docker_health"},
		{"probe none", unit("    ready: {}\n"), "units[0].ready: set http, tcp or docker_health"},
		{"probe bad url", unit("    ready:\n      http: ftp://x\n"), "units[0].ready.http"},
		{"probe bad tcp", unit("    ready:\n      tcp: nohost\n"), "units[0].ready.tcp"},
		{"secret in args", unit("    args: [\"--token\", \"secret:tunnel-token\"]\n"), "units[0].args[1]: secret references are not allowed in args"},
		{"bad env key", unit("    env:\n      \"1X\": y\n"), "units[0].env.1X"},
		{"bad secret ref", unit("    env:\n      T: \"secret:\"\n"), "units[0].env.T"},
		{"relative file", unit("    files:\n      - path: tok\n        content: x\n"), "units[0].files[0].path"},
		{"bad file mode", unit("    files:\n      - path: /run/x\n        mode: \"999\"\n"), "units[0].files[0].mode"},
		{"ssm without prefix", "secrets:\n  source: ssm\n", "secrets.prefix: is required"},
		{"ssm bad prefix", "secrets:\n  source: ssm\n  prefix: molecule/\n", "secrets.prefix"},
		{"bad source", "secrets:\n  source: vault\n", "secrets.source"},
		{"jitter too big", "secrets:\n  jitter: 1.5\n", "secrets.jitter"},
		{"literal enrollment token", "identity:\n  mode: enrollment\n  enrollment_token: abc123\n", "identity.enrollment_token: must be a reference"},
		{"bad cp url", "control_plane:\n  url: fleet.example\n", "control_plane.url"},
		{"plain http cp off loopback", "control_plane:\n  url: http://10.0.0.5:7070\n", "control_plane.url: \"http://10.0.0.5:7070\" is plain HTTP to a host that is not loopback"},
		{"plain http cp by name", "control_plane:\n  url: http://fleet.example\n", "use https://"},
		{"relative ca file", "control_plane:\n  url: https://fleet.example\n  ca_file: ca.pem\n", "control_plane.ca_file: must be an absolute path"},
		{"ca file with http", "control_plane:\n  url: http://127.0.0.1:7070\n  ca_file: /etc/ca.pem\n", "control_plane.ca_file: is set but control_plane.url is plain http"},
		{"ca file without url", "control_plane:\n  ca_file: /etc/ca.pem\n", "control_plane.ca_file: is set but control_plane.url is empty"},
		{"relative state dir", "state_dir: var/lib\n", "state_dir: must be an absolute path"},
		{"docker health on exec", unit("    ready: {docker_health: true}\n"), "units[0].ready.docker_health: needs kind: container"},
		{"container without spec", "units:\n  - name: a\n    kind: container\n", "units[0].container: is required"},
		{"two documents", minimal + "---\nrole: tenant\n", "more than one YAML document"},
		{"not a mapping", "- a\n- b\n", "invalid config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %q\nwant it to contain %q", err, tt.want)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

// TestControlPlaneURLAccepted: https anywhere, plain http only to loopback.
func TestControlPlaneURLAccepted(t *testing.T) {
	for _, u := range []string{"https://fleet.example", "https://10.0.0.5:7443", "http://127.0.0.1:7070", "http://127.1.2.3:1", "http://localhost:7070", "http://[::1]:7070"} {
		t.Run(u, func(t *testing.T) {
			c, err := Parse(strings.NewReader("control_plane:\n  url: " + u + "\n  ca_file: /etc/molecule-agent/cp-ca.pem\n"))
			if strings.HasPrefix(u, "http://") {
				c, err = Parse(strings.NewReader("control_plane:\n  url: " + u + "\n"))
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.ControlPlane.URL != u {
				t.Errorf("url = %q", c.ControlPlane.URL)
			}
		})
	}
}

func TestFieldErrorIsTyped(t *testing.T) {
	_, err := Parse(strings.NewReader("role: x\n"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "role" {
		t.Fatalf("err = %v, want a *FieldError for role", err)
	}
}

func TestSecretRefs(t *testing.T) {
	u := Unit{Env: map[string]string{"A": "secret:x", "B": "plain", "C": "secret:x"},
		Files: []File{{Path: "/run/t", Content: "secret:y"}}}
	got := u.SecretRefs()
	if len(got) != 2 {
		t.Fatalf("SecretRefs = %v, want x and y once each", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/agent.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want not-exist", err)
	}
}

func TestDurationRoundTrip(t *testing.T) {
	d := D(1500 * time.Millisecond)
	v, _ := d.MarshalYAML()
	if v != "1.5s" {
		t.Errorf("MarshalYAML = %v, want 1.5s", v)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(minimal)
	f.Add("units:\n  - name: a\n    command: x\n    after: [a]\n")
	f.Add("role: tenant\nsecrets:\n  source: ssm\n  prefix: /a\n")
	f.Add("units:\n  - name: a\n    kind: container\n    container:\n      image: x\n")
	f.Add("units: [{name: a, command: x, ready: {tcp: ':1'}, restart: {max_delay: 1s}}]")
	if b, err := os.ReadFile("agent.example.yaml"); err == nil {
		f.Add(string(b))
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(strings.NewReader(s))
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}

// TestEmptyOrMissingConfigRefused: a config with nothing in it would start
// an agent that does nothing; it is refused, saying what to write.
func TestEmptyOrMissingConfigRefused(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"empty", ""},
		{"blank lines", "\n\n  \n"},
		{"only comments", "# role: tenant\n# units:\n"},
		{"document marker", "---\n"},
		{"null", "~\n"},
		{"empty mapping", "{}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.body))
			if err == nil {
				t.Fatal("accepted, want a refusal")
			}
			for _, want := range []string{"empty", "role", "units", "agent.example.yaml"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
	missing := t.TempDir() + "/agent.yaml"
	_, err := Load(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") ||
		!strings.Contains(err.Error(), "bootstrap") {
		t.Errorf("missing config: got %v, want an error naming %s and what to write", err, missing)
	}
}
