package provision_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/bootstrap/hostparams"
	"github.com/molecule-ai/molecule-agent/controlplane/provision"
	"github.com/molecule-ai/molecule-agent/controlplane/provision/ec2test"
)

var instanceCfg = provision.InstanceConfig{ImageID: "ami-0123456789abcdef0", InstanceType: "t3.medium",
	SubnetID: "subnet-private1", SecurityGroups: []string{"sg-host"}, InstanceProfile: "molecule-tenant", MaxPerOrg: 3}

func tenantSpec(key string) provision.LaunchSpec {
	return provision.LaunchSpec{Key: key, TunnelID: "6ff42ae2-765d-4adf-8112-31c55c1551ef", Params: hostparams.Params{
		Role: "tenant", Org: "acme", ControlPlane: "https://cp.molecule.test", SSMPrefix: "/molecule/prod/tenants/acme"}}
}

func instances(t *testing.T, s *ec2test.Server) *provision.Instances {
	t.Helper()
	log, _ := newLog()
	b, err := provision.NewInstances(ec2Client(t, s), instanceCfg, fast, log)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLaunchAsBootstrapReadsIt(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	b := instances(t, s)
	spec := tenantSpec("org/acme/tenant/1")
	in, err := b.Launch(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	got := s.Instances()
	if len(got) != 1 || got[0].ID != in.ID {
		t.Fatalf("instances = %+v, want the one launched", got)
	}
	l := got[0].Launch
	if l.HTTPTokens != "required" || l.HopLimit != 2 || l.MetadataTags != "enabled" || l.HTTPEndpoint != "enabled" {
		t.Errorf("metadata options: tokens %q hop %d tags %q endpoint %q; want IMDSv2 required, hop 2, tags enabled",
			l.HTTPTokens, l.HopLimit, l.MetadataTags, l.HTTPEndpoint)
	}
	if l.InstanceProfileName != "molecule-tenant" || l.SubnetID != "subnet-private1" || !l.NetworkInterface ||
		l.AssociatePublicIP == nil || *l.AssociatePublicIP {
		t.Errorf("placement: profile %q subnet %q public IP %v; want the profile, the private subnet, no public IP",
			l.InstanceProfileName, l.SubnetID, l.AssociatePublicIP)
	}
	wantUD, _ := hostparams.RenderUserData(spec.Params)
	if l.UserData != wantUD {
		t.Errorf("user-data = %q, want %q", l.UserData, wantUD)
	}
	wantTags := map[string]string{hostparams.TagRole: "tenant", hostparams.TagOrg: "acme", hostparams.TagControlPlane: "https://cp.molecule.test",
		hostparams.TagSSMPrefix: "/molecule/prod/tenants/acme", hostparams.TagChannel: "stable", provision.TagTunnel: spec.TunnelID}
	if !maps.Equal(l.Tags, wantTags) {
		t.Errorf("tags = %v, want %v", l.Tags, wantTags)
	}
	for k := range l.Tags {
		if !strings.HasPrefix(k, "molecule:") {
			t.Errorf("tag %q is not a molecule: tag", k)
		}
	}
	if len(l.ClientToken) > 64 || l.ClientToken != provision.ClientToken(spec.Key) {
		t.Errorf("client token %q, want ClientToken(key) of at most 64 characters", l.ClientToken)
	}
}

func TestLaunchIsIdempotent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		faults []ec2test.Fault
	}{
		{name: "again"},
		{name: "throttled", faults: []ec2test.Fault{ec2test.Throttled, ec2test.Throttled}},
		{name: "5xx", faults: []ec2test.Fault{ec2test.ServerError}},
		{name: "answer lost", faults: []ec2test.Fault{ec2test.LostAnswer}},
		{name: "answer lost twice", faults: []ec2test.Fault{ec2test.LostAnswer, ec2test.LostAnswer}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ec2test.New(t)
			b := instances(t, s)
			s.Fail("RunInstances", tt.faults...)
			first, err := b.Launch(t.Context(), tenantSpec("org/acme/tenant/1"))
			if err != nil {
				t.Fatal(err)
			}
			// A control plane restarted after the step runs it again.
			again, err := b.Launch(t.Context(), tenantSpec("org/acme/tenant/1"))
			if err != nil {
				t.Fatal(err)
			}
			if first.ID != again.ID || len(s.Instances()) != 1 {
				t.Errorf("launched %s then %s, %d instances in all; want one", first.ID, again.ID, len(s.Instances()))
			}
		})
	}
}

func TestLaunchRefusals(t *testing.T) {
	t.Parallel()
	t.Run("denied", func(t *testing.T) {
		t.Parallel()
		s := ec2test.New(t)
		s.Fail("RunInstances", ec2test.Unauthorized)
		_, err := instances(t, s).Launch(t.Context(), tenantSpec("k"))
		if !errors.Is(err, provision.ErrDenied) || !strings.Contains(err.Error(), "grant ec2:RunInstances") {
			t.Errorf("error = %v, want ErrDenied saying to grant ec2:RunInstances", err)
		}
		if s.Count("RunInstances", "UnauthorizedOperation") != 1 || len(s.Instances()) != 0 {
			t.Errorf("a refusal was retried or launched something")
		}
	})
	t.Run("throttled past the attempts", func(t *testing.T) {
		t.Parallel()
		s := ec2test.New(t)
		s.Fail("RunInstances", ec2test.Throttled, ec2test.Throttled, ec2test.Throttled, ec2test.Throttled)
		_, err := instances(t, s).Launch(t.Context(), tenantSpec("k"))
		if err == nil || s.Count("RunInstances", "RequestLimitExceeded") != fast.Attempts {
			t.Errorf("error = %v after %d tries, want a failure after %d", err, s.Count("RunInstances", "RequestLimitExceeded"), fast.Attempts)
		}
	})
	t.Run("cap", func(t *testing.T) {
		t.Parallel()
		s := ec2test.New(t)
		b := instances(t, s)
		for _, k := range []string{"a", "b", "c"} {
			if _, err := b.Launch(t.Context(), tenantSpec(k)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.Launch(t.Context(), tenantSpec("d")); !errors.Is(err, provision.ErrCapReached) {
			t.Errorf("fourth launch: %v, want ErrCapReached", err)
		}
		if _, err := b.Launch(t.Context(), tenantSpec("a")); err != nil {
			t.Errorf("a launched key at the cap: %v, want its instance back", err)
		}
	})
	t.Run("spent key", func(t *testing.T) {
		t.Parallel()
		s := ec2test.New(t)
		b := instances(t, s)
		in, err := b.Launch(t.Context(), tenantSpec("k"))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Terminate(t.Context(), in.ID); err != nil {
			t.Fatal(err)
		}
		s.SetState(in.ID, ec2test.Terminated)
		if _, err := b.Launch(t.Context(), tenantSpec("k")); !errors.Is(err, provision.ErrKeySpent) {
			t.Errorf("relaunch under a spent key: %v, want ErrKeySpent", err)
		}
	})
	t.Run("secret in params", func(t *testing.T) {
		t.Parallel()
		s := ec2test.New(t)
		spec := tenantSpec("k")
		spec.Params.ControlPlane = "https://cp.molecule.test"
		spec.Params.SSMPrefix = "/molecule/prod/AKIAIOSFODNN7EXAMPLE"
		if _, err := instances(t, s).Launch(t.Context(), spec); err == nil || len(s.Instances()) != 0 {
			t.Errorf("launch with a secret-looking parameter: %v, want refused before EC2", err)
		}
	})
}

func TestListTerminateConsole(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	b := instances(t, s)
	a, err := b.Launch(t.Context(), tenantSpec("a"))
	if err != nil {
		t.Fatal(err)
	}
	ws := tenantSpec("w")
	ws.Params.Role, ws.Params.Workspace, ws.Params.PlatformURL, ws.TunnelID = "workspace", "ws-1", "http://10.0.1.5:8080", ""
	w, err := b.Launch(t.Context(), ws)
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.List(t.Context(), provision.Selector{Org: "acme", Workspace: "ws-1"})
	if err != nil || len(got) != 1 || got[0].ID != w.ID || got[0].Tags[hostparams.TagWorkspace] != "ws-1" {
		t.Errorf("workspace's instances = %+v, %v; want %s", got, err, w.ID)
	}
	s.SetConsole(a.ID, "[  5.1] MOLECULE AGENT BOOT FAILED: ssm: AccessDenied\n")
	out, err := b.Console(t.Context(), a.ID)
	if err != nil || !strings.Contains(out, "MOLECULE AGENT BOOT FAILED") {
		t.Errorf("console = %q, %v", out, err)
	}
	s.Fail("TerminateInstances", ec2test.Throttled)
	if err := b.Terminate(t.Context(), a.ID, w.ID, "i-0123456789abcdef0"); err != nil {
		t.Fatalf("terminate (one unknown): %v", err)
	}
	if err := b.Terminate(t.Context(), a.ID); err != nil {
		t.Errorf("terminate twice: %v", err)
	}
	if got, err := b.List(t.Context(), provision.Selector{Org: "acme"}); err != nil || len(got) != 0 {
		t.Errorf("after terminate: %+v, %v; want none live", got, err)
	}
	if len(s.Live()) != 0 {
		t.Errorf("live in the fake: %+v", s.Live())
	}
}
