package iam

import (
	"encoding/json"
	"strings"
	"testing"
)

type policy struct {
	Version   string
	Statement []statement
}

type statement struct {
	Sid       string
	Effect    string
	Action    stringList
	Resource  stringList
	Condition map[string]map[string]string
}

// stringList is IAM's "one string or a list".
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

var vars = map[string]string{"env": "prod", "org": "acme", "workspace": "ws-1", "region": "us-east-2",
	"account": "123456789012", "kms_key_id": "1234abcd-12ab-34cd-56ef-1234567890ab"}

func load(t *testing.T, name string) policy {
	t.Helper()
	b, err := Render(name, vars)
	if err != nil {
		t.Fatalf("Render %s: %v", name, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var p policy
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if p.Version != "2012-10-17" {
		t.Errorf("%s: Version %q", name, p.Version)
	}
	return p
}

func allows(p policy, action string) []statement {
	var out []statement
	for _, s := range p.Statement {
		for _, a := range s.Action {
			if s.Effect == "Allow" && (a == action || a == "*" || strings.HasSuffix(a, ":*") && strings.HasPrefix(action, strings.TrimSuffix(a, "*"))) {
				out = append(out, s)
			}
		}
	}
	return out
}

func TestInstanceRoles(t *testing.T) {
	tests := []struct {
		template, prefix string
	}{
		{TenantInstanceRole, TenantPrefix("prod", "acme")},
		{WorkspaceInstanceRole, WorkspacePrefix("prod", "acme", "ws-1")},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			p := load(t, tt.template)
			for _, action := range []string{"ssm:GetParametersByPath", "ssm:GetParameter"} {
				ss := allows(p, action)
				if len(ss) == 0 {
					t.Errorf("%s not allowed", action)
				}
				for _, s := range ss {
					for _, r := range s.Resource {
						arn := "arn:aws:ssm:us-east-2:123456789012:parameter" + tt.prefix
						if r != arn && r != arn+"/*" {
							t.Errorf("%s allowed on %s, outside %s", action, r, tt.prefix)
						}
					}
				}
			}
			dec := allows(p, "kms:Decrypt")
			if len(dec) != 1 {
				t.Fatalf("want one kms:Decrypt statement, got %d", len(dec))
			}
			c := dec[0].Condition
			if got := c["StringEquals"]["kms:ViaService"]; got != "ssm.us-east-2.amazonaws.com" {
				t.Errorf("kms:ViaService = %q, want ssm.us-east-2.amazonaws.com", got)
			}
			wantCtx := "arn:aws:ssm:us-east-2:123456789012:parameter" + tt.prefix + "/*"
			if got := c["StringLike"]["kms:EncryptionContext:PARAMETER_ARN"]; got != wantCtx {
				t.Errorf("encryption context = %q, want %q", got, wantCtx)
			}
			if r := dec[0].Resource; len(r) != 1 || !strings.HasSuffix(r[0], ":key/"+vars["kms_key_id"]) {
				t.Errorf("kms:Decrypt resource = %v, want the tenant's key", r)
			}
			for _, a := range []string{"ssm:PutParameter", "ssm:DeleteParameter", "kms:Encrypt", "iam:PassRole"} {
				if len(allows(p, a)) > 0 {
					t.Errorf("%s allowed", a)
				}
			}
		})
	}
}

// TestLayoutIsDisjoint: no prefix is inside another, so a path grant
// (which reaches every level below it) never covers another host's.
func TestLayoutIsDisjoint(t *testing.T) {
	prefixes := []string{TenantPrefix("prod", "acme"), TenantPrefix("prod", "acme2"), WorkspacePrefix("prod", "acme", "ws-1"),
		WorkspacePrefix("prod", "acme", "ws-12"), WorkspacePrefix("prod", "other", "ws-1"), TenantPrefix("staging", "acme")}
	for _, a := range prefixes {
		for _, b := range prefixes {
			if a != b && (strings.HasPrefix(b+"/", a+"/") || strings.HasPrefix(a+"/", b+"/")) {
				t.Errorf("%s and %s nest", a, b)
			}
		}
	}
}

// TestPersistTokenGrantsOneParameter: the optional grant writes exactly the
// workspace's own token parameter and encrypts only for it.
func TestPersistTokenGrantsOneParameter(t *testing.T) {
	p := load(t, WorkspacePersistToken)
	arn := "arn:aws:ssm:us-east-2:123456789012:parameter" + WorkspacePrefix("prod", "acme", "ws-1") + "/" + WorkspaceTokenName
	put := allows(p, "ssm:PutParameter")
	if len(put) != 1 || len(put[0].Resource) != 1 || put[0].Resource[0] != arn {
		t.Fatalf("ssm:PutParameter statements %+v, want one on %s", put, arn)
	}
	enc := allows(p, "kms:Encrypt")
	if len(enc) != 1 {
		t.Fatalf("want one kms:Encrypt statement, got %d", len(enc))
	}
	if got := enc[0].Condition["StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"]; got != arn {
		t.Errorf("kms:Encrypt encryption context %q, want exactly %s", got, arn)
	}
	if got := enc[0].Condition["StringEquals"]["kms:ViaService"]; got != "ssm.us-east-2.amazonaws.com" {
		t.Errorf("kms:ViaService = %q", got)
	}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			if a != "ssm:PutParameter" && a != "kms:Encrypt" {
				t.Errorf("persist grant allows %s", a)
			}
		}
		for _, r := range s.Resource {
			if strings.Contains(r, "*") {
				t.Errorf("persist grant has a wildcard resource %s", r)
			}
		}
	}
	for _, a := range []string{"ssm:GetParameter", "ssm:GetParametersByPath", "ssm:DeleteParameter", "kms:Decrypt"} {
		if len(allows(p, a)) > 0 {
			t.Errorf("persist grant allows %s", a)
		}
	}
}

func TestControlPlaneNeverDecrypts(t *testing.T) {
	p := load(t, ControlPlaneRole)
	for _, a := range []string{"kms:Decrypt", "ssm:GetParametersByPath", "ssm:GetParameter"} {
		if len(allows(p, a)) > 0 {
			t.Errorf("control plane allowed %s", a)
		}
		denied := false
		for _, s := range p.Statement {
			for _, x := range s.Action {
				if s.Effect == "Deny" && x == a {
					denied = true
				}
			}
		}
		if !denied {
			t.Errorf("control plane policy does not explicitly deny %s", a)
		}
	}
}

func TestRenderRefuses(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"missing", map[string]string{"env": "prod"}, "org: missing"},
		{"wildcard org", map[string]string{"env": "prod", "org": "*", "region": "us-east-2", "account": "1", "kms_key_id": "k"}, "org: must be"},
		{"path trick", map[string]string{"env": "prod", "org": "acme/../other", "region": "us-east-2", "account": "1", "kms_key_id": "k"}, "org: must be"},
		{"quote", map[string]string{"env": `prod"`, "org": "acme", "region": "us-east-2", "account": "1", "kms_key_id": "k"}, "env: must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(TenantInstanceRole, tt.vars)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Render = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestPlaceholders(t *testing.T) {
	got, err := Placeholders(WorkspaceInstanceRole)
	if err != nil {
		t.Fatal(err)
	}
	if want := "account env kms_key_id org region workspace"; strings.Join(got, " ") != want {
		t.Errorf("Placeholders = %v, want %s", got, want)
	}
	// Every template is valid JSON even before rendering.
	for _, n := range []string{TenantInstanceRole, WorkspaceInstanceRole, ControlPlaneRole, WorkspacePersistToken} {
		b, _ := files.ReadFile(n)
		if !json.Valid(b) {
			t.Errorf("%s is not JSON", n)
		}
	}
}
