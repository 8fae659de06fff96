//go:build unix

package secretstore_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/packaging/iam"
)

// fleetParams fills s with two tenants and their workspaces, laid out as
// packaging/iam grants them (docs/ssm-layout.md), and returns every value
// by full parameter name.
func fleetParams(s *ssmtest.Server) map[string]string {
	all := map[string]string{
		iam.TenantPrefix("prod", "acme") + "/tunnel-token":                           "acme-tunnel",
		iam.TenantPrefix("prod", "acme") + "/postgres-password":                      "acme-pg",
		iam.TenantPrefix("prod", "acme2") + "/tunnel-token":                          "acme2-tunnel",
		iam.TenantPrefix("prod", "globex") + "/tunnel-token":                         "globex-tunnel",
		iam.TenantPrefix("staging", "acme") + "/tunnel-token":                        "acme-staging-tunnel",
		iam.WorkspacePrefix("prod", "acme", "ws-1") + "/" + iam.WorkspaceTokenName:   "ws1-token",
		iam.WorkspacePrefix("prod", "acme", "ws-1") + "/env/OPENAI_API_KEY":          "ws1-openai",
		iam.WorkspacePrefix("prod", "acme", "ws-12") + "/" + iam.WorkspaceTokenName:  "ws12-token",
		iam.WorkspacePrefix("prod", "acme", "ws-2") + "/" + iam.WorkspaceTokenName:   "ws2-token",
		iam.WorkspacePrefix("prod", "globex", "ws-1") + "/" + iam.WorkspaceTokenName: "globex-ws1-token",
	}
	for n, v := range all {
		s.PutSecure(n, v)
	}
	return all
}

// policy renders a template of packaging/iam for the fake's region and
// account.
func policy(t *testing.T, template, org, workspace string) []byte {
	t.Helper()
	b, err := iam.Render(template, map[string]string{"env": "prod", "org": org, "workspace": workspace,
		"region": ssmtest.Region, "account": ssmtest.Account, "kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoleReachesOnlyItsGrant runs the real SSM client against the fake
// enforcing the rendered instance-role policies: a tenant host reads its
// tenant's parameters and never its workspaces' tokens or another
// tenant's; a workspace host reads only its own workspace.
func TestRoleReachesOnlyItsGrant(t *testing.T) {
	t.Parallel()
	tenantRole := func(org string) []byte { return policy(t, iam.TenantInstanceRole, org, "") }
	workspaceRole := func(org, ws string) []byte { return policy(t, iam.WorkspaceInstanceRole, org, ws) }
	tests := []struct {
		name   string
		policy []byte
		prefix string
		want   []string // full names read; nil = AccessDenied
	}{
		{"tenant host, own prefix", tenantRole("acme"), iam.TenantPrefix("prod", "acme"),
			[]string{iam.TenantPrefix("prod", "acme") + "/postgres-password", iam.TenantPrefix("prod", "acme") + "/tunnel-token"}},
		{"tenant host, its workspace", tenantRole("acme"), iam.WorkspacePrefix("prod", "acme", "ws-1"), nil},
		{"tenant host, all its workspaces", tenantRole("acme"), "/molecule/prod/workspaces/acme", nil},
		{"tenant host, another tenant", tenantRole("acme"), iam.TenantPrefix("prod", "globex"), nil},
		{"tenant host, a tenant sharing its name's start", tenantRole("acme"), iam.TenantPrefix("prod", "acme2"), nil},
		{"tenant host, another environment", tenantRole("acme"), iam.TenantPrefix("staging", "acme"), nil},
		{"tenant host, every tenant", tenantRole("acme"), "/molecule/prod/tenants", nil},
		{"workspace host, own prefix", workspaceRole("acme", "ws-1"), iam.WorkspacePrefix("prod", "acme", "ws-1"),
			[]string{iam.WorkspacePrefix("prod", "acme", "ws-1") + "/env/OPENAI_API_KEY", iam.WorkspacePrefix("prod", "acme", "ws-1") + "/" + iam.WorkspaceTokenName}},
		{"workspace host, a sibling workspace", workspaceRole("acme", "ws-1"), iam.WorkspacePrefix("prod", "acme", "ws-2"), nil},
		{"workspace host, a sibling sharing its ID's start", workspaceRole("acme", "ws-1"), iam.WorkspacePrefix("prod", "acme", "ws-12"), nil},
		{"workspace host, same ID in another org", workspaceRole("acme", "ws-1"), iam.WorkspacePrefix("prod", "globex", "ws-1"), nil},
		{"workspace host, its tenant", workspaceRole("acme", "ws-1"), iam.TenantPrefix("prod", "acme"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ssmtest.New(t)
			all := fleetParams(s)
			if err := s.SetPolicy(tt.policy); err != nil {
				t.Fatal(err)
			}
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			src, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{Prefix: tt.prefix, Region: ssmtest.Region,
				Endpoint: s.URL, Credentials: s.Credentials(), HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 1, MaxBackoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			got, err := src.Fetch(t.Context())
			if tt.want == nil {
				if !errors.Is(err, secretstore.ErrAccessDenied) || !strings.Contains(err.Error(), "instance role cannot read "+tt.prefix) {
					t.Fatalf("Fetch %s = %d secrets, %v; want access denied naming the prefix", tt.prefix, len(got), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fetch %s: %v", tt.prefix, err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("read %d parameters, want %d: %v", len(got), len(tt.want), keys(got))
			}
			for _, full := range tt.want {
				rel := strings.TrimPrefix(full, tt.prefix+"/")
				if g, ok := got[rel]; !ok || g.Reveal() != all[full] {
					t.Errorf("%s: present %v, right value %v", full, ok, ok && g.Reveal() == all[full])
				}
			}
		})
	}
}

func keys(m map[string]secretstore.Secret) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestBuiltInRolesReadInsideTheirGrant: every secret the built-in roles
// reference (agent/config/roles) lives under the prefix the role's IAM
// template grants, so a host of that role can fetch all of them, and a host
// of the other role can fetch none.
func TestBuiltInRolesReadInsideTheirGrant(t *testing.T) {
	t.Parallel()
	roles := []struct {
		role, prefix string
		own, other   []byte
		extra        string
	}{
		{"tenant", iam.TenantPrefix("prod", "acme"), policy(t, iam.TenantInstanceRole, "acme", ""), policy(t, iam.WorkspaceInstanceRole, "acme", "ws-1"), ""},
		{"workspace", iam.WorkspacePrefix("prod", "acme", "ws-1"), policy(t, iam.WorkspaceInstanceRole, "acme", "ws-1"), policy(t, iam.TenantInstanceRole, "acme", ""),
			"workspace: {id: ws-1, platform_url: \"http://10.0.0.5:8080\"}\n"},
	}
	for _, r := range roles {
		t.Run(r.role, func(t *testing.T) {
			t.Parallel()
			c, err := config.Parse(strings.NewReader("role: " + r.role + "\n" + r.extra))
			if err != nil {
				t.Fatal(err)
			}
			refs := map[string]bool{}
			for _, u := range c.Units {
				for _, ref := range u.SecretRefs() {
					refs[ref] = true
				}
				if u.Container != nil && u.Container.RegistryAuth != "" {
					refs[strings.TrimPrefix(u.Container.RegistryAuth, config.SecretPrefix)] = true
				}
			}
			if len(refs) == 0 {
				t.Fatalf("role %s references no secret", r.role)
			}
			for _, pol := range []struct {
				name string
				doc  []byte
				ok   bool
			}{{"own role", r.own, true}, {"other role", r.other, false}} {
				s := ssmtest.New(t)
				for ref := range refs {
					s.PutSecure(r.prefix+"/"+ref, "v-"+ref)
				}
				if err := s.SetPolicy(pol.doc); err != nil {
					t.Fatal(err)
				}
				tr := &http.Transport{}
				t.Cleanup(tr.CloseIdleConnections)
				src, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{Prefix: r.prefix, Region: ssmtest.Region,
					Endpoint: s.URL, Credentials: s.Credentials(), HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 1})
				if err != nil {
					t.Fatal(err)
				}
				got, err := src.Fetch(t.Context())
				if !pol.ok {
					if !errors.Is(err, secretstore.ErrAccessDenied) {
						t.Errorf("%s policy read %s: %d secrets, %v; want access denied", pol.name, r.prefix, len(got), err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s policy: %v", pol.name, err)
				}
				for ref := range refs {
					if _, ok := got[ref]; !ok {
						t.Errorf("secret:%s of role %s is not readable under %s", ref, r.role, r.prefix)
					}
				}
			}
		})
	}
}
