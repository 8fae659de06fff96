//go:build unix

package bootstrap

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const prefix = "/molecule/test/tenants/acme"

func TestRenderConfig(t *testing.T) {
	tests := []struct {
		name  string
		p     Params
		units string
		check func(t *testing.T, c *config.Config)
	}{
		{"tenant on EC2", Params{Role: "tenant", Org: "acme", ControlPlane: "https://fleet.example", SSMPrefix: prefix, Region: "us-east-2"}, "",
			func(t *testing.T, c *config.Config) {
				if c.Role != "tenant" || c.Secrets.Source != "ssm" || c.Secrets.Prefix != prefix || c.Secrets.Region != "us-east-2" {
					t.Errorf("role/secrets = %q %+v", c.Role, c.Secrets)
				}
				if c.Identity.Mode != "imds" || !c.Identity.WatchInterruptions {
					t.Errorf("identity = %+v, want imds watching interruptions", c.Identity)
				}
				if c.ControlPlane.URL != "https://fleet.example" || c.ControlPlane.Org != "acme" || c.ControlPlane.Channel != "stable" {
					t.Errorf("control_plane = %+v", c.ControlPlane)
				}
			}},
		{"enrollment without secrets", Params{Role: "workspace", Org: "acme", Workspace: "ws-1", OrgID: "6a0e-org", PlatformURL: "http://10.0.0.5:8080", Identity: "enrollment"}, "",
			func(t *testing.T, c *config.Config) {
				if c.Secrets.Source != "" {
					t.Errorf("secrets.source = %q, want none", c.Secrets.Source)
				}
				if want := "file:" + DefaultEnrollmentTokenFile; c.Identity.EnrollmentToken != want {
					t.Errorf("enrollment_token = %q, want %q", c.Identity.EnrollmentToken, want)
				}
				if c.ControlPlane.Workspace != "ws-1" || c.Workspace.ID != "ws-1" || c.Workspace.PlatformURL != "http://10.0.0.5:8080" {
					t.Errorf("workspace = %q, %+v", c.ControlPlane.Workspace, c.Workspace)
				}
				if c.Workspace.OrgID != "6a0e-org" || !c.Workspace.Proxy.Enabled {
					t.Errorf("workspace org_id = %q, proxy %+v: want the org ID and the org-header proxy on", c.Workspace.OrgID, c.Workspace.Proxy)
				}
			}},
		{"private CA", Params{Role: "tenant", Org: "acme", ControlPlane: "https://10.0.0.1:7443", ControlPlaneCA: "/etc/molecule-agent/control-plane-ca.pem"}, "",
			func(t *testing.T, c *config.Config) {
				if c.ControlPlane.URL != "https://10.0.0.1:7443" || c.ControlPlane.CAFile != "/etc/molecule-agent/control-plane-ca.pem" {
					t.Errorf("control_plane = %+v, want the URL and ca_file", c.ControlPlane)
				}
			}},
		{"with units file", Params{Role: "tenant", Org: "acme"},
			"units:\n  - name: hello\n    kind: exec\n    command: /bin/sleep\n    args: [\"60\"]\n",
			func(t *testing.T, c *config.Config) {
				if u := c.Unit("hello"); u == nil || u.Command != "/bin/sleep" {
					t.Errorf("units = %+v, want hello running /bin/sleep", c.Units)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var units []byte
			if tt.units != "" {
				units = []byte(tt.units)
			}
			data, err := RenderConfig(tt.p.WithDefaults(), units)
			if err != nil {
				t.Fatalf("RenderConfig: %v", err)
			}
			c, err := config.Parse(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("agent cannot parse what bootstrap wrote: %v\n%s", err, data)
			}
			tt.check(t, c)
		})
	}
}

func TestRenderConfigRefusesBadUnits(t *testing.T) {
	p := Params{Role: "tenant", Org: "acme"}.WithDefaults()
	for name, units := range map[string]string{
		"not a list":      "units: {name: x}\n",
		"unknown key":     "units: []\nrole: tenant\n",
		"invalid unit":    "units:\n  - name: x\n    kind: exec\n",
		"not yaml at all": "\t- : :",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := RenderConfig(p, []byte(units)); err == nil {
				t.Errorf("RenderConfig accepted units file %q", units)
			}
		})
	}
}

func TestWriteIfChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etc", "agent.yaml")
	steps := []struct {
		data string
		want bool
	}{{"a: 1\n", true}, {"a: 1\n", false}, {"a: 2\n", true}, {"a: 2\n", false}}
	for i, s := range steps {
		got, err := writeIfChanged(path, []byte(s.data), 0o644)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got != s.want {
			t.Errorf("step %d: changed = %v, want %v", i, got, s.want)
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", st.Mode().Perm())
	}
	// A wrong mode is fixed even when the content is the same.
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := writeIfChanged(path, []byte("a: 2\n"), 0o644); !got {
		t.Errorf("mode 0600 not rewritten")
	}
}

// TestRunSecretsDenied: an instance role that cannot read its prefix is
// reported at boot, naming the action to grant, before anything is written.
func TestRunSecretsDenied(t *testing.T) {
	ssm := ssmtest.New(t)
	ssm.PutSecure(prefix+"/tunnel-token", "s3cr3t-tunnel-value")
	ssm.Deny(prefix)
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{
		Params:     Params{Role: "tenant", Org: "acme", SSMPrefix: prefix, Region: ssmtest.Region, SSMEndpoint: ssm.URL},
		ConfigPath: cfgPath, SSMCredentials: ssm.Credentials(), Out: &out,
	})
	if err == nil {
		t.Fatal("Run succeeded with the prefix denied")
	}
	for _, want := range []string{"ssm:GetParametersByPath", prefix} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	t.Logf("%s%s", FailedPrefix, OneLine(err))
	if _, serr := os.Stat(cfgPath); serr == nil {
		t.Errorf("config written despite the failed check")
	}
	if strings.Contains(out.String()+err.Error(), "s3cr3t") {
		t.Errorf("secret value printed")
	}
}

// TestRunWithoutSystemd runs every phase up to the service on this host,
// where systemd is not PID 1: bootstrap must refuse rather than let
// kardianos fall back to SysV scripts in the host's /etc.
func TestRunWithoutSystemd(t *testing.T) {
	if systemdRunning() == nil {
		t.Skip("systemd is PID 1 here: this test would install a real service")
	}
	ssm := ssmtest.New(t)
	ssm.PutSecure(prefix+"/tunnel-token", "s3cr3t-tunnel-value")
	ssm.Put(prefix+"/db/user", "molecule")
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	o := Options{
		Params: Params{Role: "tenant", Org: "acme", SSMPrefix: prefix, Region: ssmtest.Region, SSMEndpoint: ssm.URL,
			ControlPlane: "https://fleet.example"},
		ConfigPath: cfgPath, SSMCredentials: ssm.Credentials(),
	}
	for i, wantConfig := range []string{"written", "unchanged"} {
		var out bytes.Buffer
		o.Out = &out
		_, err := Run(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "systemd is not PID 1") {
			t.Fatalf("run %d: err = %v, want systemd is not PID 1", i, err)
		}
		for _, want := range []string{"boot params", "boot secrets", "2 parameters readable under " + prefix, "boot config", cfgPath + " " + wantConfig} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run %d: output lacks %q:\n%s", i, want, out.String())
			}
		}
		if strings.Contains(out.String(), "s3cr3t") {
			t.Errorf("secret value printed:\n%s", out.String())
		}
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "s3cr3t") {
		t.Errorf("agent.yaml holds a secret value")
	}
}

func TestOneLine(t *testing.T) {
	got := OneLine(testErr("params: --role: bad\n--org: bad"))
	if want := "params: --role: bad; --org: bad"; got != want {
		t.Errorf("OneLine = %q, want %q", got, want)
	}
}

type testErr string

func (e testErr) Error() string { return string(e) }

// TestRunParamsFromTags: with no --role/--org, bootstrap reads the
// instance tags and the region over IMDSv2 (the imdstest double, driven by
// the real SDK client), and SSM is read with the instance role's
// credentials from IMDS.
func TestRunParamsFromTags(t *testing.T) {
	if systemdRunning() == nil {
		t.Skip("systemd is PID 1 here: this test would install a real service")
	}
	md := imdstest.New(t, imdstest.Instance{Region: ssmtest.Region})
	md.EnableTags(map[string]string{TagRole: "workspace", TagOrg: "acme", TagWorkspace: "ws-42", TagOrgID: "org-7f3a", TagPlatformURL: "http://10.0.0.5:8080",
		TagSSMPrefix: prefix, TagChannel: "staging", "Name": "not ours"})
	md.SetRole("molecule-agent", "AKIDROLE", "role-secret-key", "session", time.Now().Add(time.Hour))
	ssm := ssmtest.New(t)
	ssm.AcceptKey("AKIDROLE", "role-secret-key")
	ssm.Put(prefix+"/workspace-id", "ws-42")
	cfgPath := filepath.Join(t.TempDir(), "agent.yaml")
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{Params: Params{SSMEndpoint: ssm.URL}, ConfigPath: cfgPath, IMDSEndpoint: md.URL, Out: &out})
	if err == nil || !strings.Contains(err.Error(), "systemd is not PID 1") {
		t.Fatalf("err = %v, want to stop at the service phase\n%s", err, out.String())
	}
	want := "role workspace, org acme, workspace ws-42, channel staging, identity imds, region " + ssmtest.Region
	if !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
	c, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Workspace.OrgID != "org-7f3a" {
		t.Errorf("workspace org_id from tag %s: %+v", TagOrgID, c.Workspace)
	}
	if c.ControlPlane.Workspace != "ws-42" || c.Secrets.Region != ssmtest.Region || c.ControlPlane.Channel != "staging" || c.Secrets.Endpoint != ssm.URL {
		t.Errorf("config from tags: %+v %+v", c.ControlPlane, c.Secrets)
	}
	if st := md.Stats(); st.V1Served != 0 || st.TokensIssued == 0 {
		t.Errorf("IMDS stats %+v: want IMDSv2 tokens and no v1 reads", st)
	}
}

func TestRunNoTags(t *testing.T) {
	md := imdstest.New(t, imdstest.Instance{})
	_, err := Run(context.Background(), Options{ConfigPath: filepath.Join(t.TempDir(), "agent.yaml"), IMDSEndpoint: md.URL})
	if err == nil || !strings.Contains(err.Error(), "InstanceMetadataTags=enabled") {
		t.Errorf("err = %v, want a hint to enable tags in metadata", err)
	}
}
