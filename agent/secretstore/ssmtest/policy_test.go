//go:build unix

package ssmtest_test

import (
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

const arnBase = "arn:aws:ssm:" + ssmtest.Region + ":" + ssmtest.Account + ":parameter"

// testPolicy grants reads of acme's prefix, GetParameter on one name by a
// ? pattern, and explicitly denies one parameter inside the grant.
var testPolicy = `{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["ssm:GetParametersByPath", "ssm:GetParameter*"],
   "Resource": ["` + arnBase + `/molecule/prod/tenants/acme", "` + arnBase + `/molecule/prod/tenants/acme/*"]},
  {"Effect": "Allow", "Action": "SSM:getparameter", "Resource": "` + arnBase + `/molecule/prod/tenants/othe?/tunnel-token"},
  {"Effect": "Deny", "Action": "ssm:*", "Resource": "` + arnBase + `/molecule/prod/tenants/acme/admin-token"}
]}`

// TestPolicyEnforced: with a policy set, every read is judged as IAM does:
// Allow on the exact path or a wildcard, an explicit Deny winning, actions
// case-insensitive, resources case-sensitive, and nothing else allowed.
func TestPolicyEnforced(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	s.Put("/molecule/prod/tenants/acme2/tunnel-token", "acme2")
	if err := s.SetPolicy([]byte(testPolicy)); err != nil {
		t.Fatal(err)
	}
	c := client(t, s, s.Credentials(), 1)
	get := func(name string) error {
		_, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name)})
		return err
	}
	getMany := func(names ...string) error {
		_, err := c.GetParameters(t.Context(), &ssm.GetParametersInput{Names: names})
		return err
	}
	path := func(p string) error {
		_, err := c.GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String(p), Recursive: aws.Bool(true)})
		return err
	}
	tests := []struct {
		name    string
		call    func() error
		denied  string // "" = allowed; else the end of AWS's message
		onWhich string
	}{
		{"path itself", func() error { return path("/molecule/prod/tenants/acme") }, "", ""},
		{"path with trailing slash", func() error { return path("/molecule/prod/tenants/acme/") }, "", ""},
		{"sub-path", func() error { return path("/molecule/prod/tenants/acme/db") }, "", ""},
		{"parameter under the grant", func() error { return get("/molecule/prod/tenants/acme/db/user") }, "", ""},
		{"GetParameters via Get*", func() error {
			return getMany("/molecule/prod/tenants/acme/db/user", "/molecule/prod/tenants/acme/region")
		}, "", ""},
		{"? pattern", func() error { return get("/molecule/prod/tenants/other/tunnel-token") }, "", ""},
		{"explicit deny wins", func() error { return get("/molecule/prod/tenants/acme/admin-token") }, "with an explicit deny in an identity-based policy", "/molecule/prod/tenants/acme/admin-token"},
		{"explicit deny inside a batch", func() error {
			return getMany("/molecule/prod/tenants/acme/db/user", "/molecule/prod/tenants/acme/admin-token")
		}, "with an explicit deny", "admin-token"},
		{"name sharing the prefix's start", func() error { return path("/molecule/prod/tenants/acme2") }, "because no identity-based policy allows the ssm:GetParametersByPath action", "/molecule/prod/tenants/acme2"},
		{"parent path", func() error { return path("/molecule/prod/tenants") }, "no identity-based policy allows", "/molecule/prod/tenants"},
		{"action only granted on another resource", func() error { return getMany("/molecule/prod/tenants/other/tunnel-token") }, "no identity-based policy allows the ssm:GetParameters action", "other/tunnel-token"},
		{"resources are case-sensitive", func() error { return get("/molecule/prod/tenants/ACME/db/user") }, "no identity-based policy allows", "ACME"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			switch {
			case tt.denied == "" && err != nil:
				t.Errorf("denied: %v", err)
			case tt.denied != "" && (apiCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), tt.denied) || !strings.Contains(err.Error(), arnBase) || !strings.Contains(err.Error(), tt.onWhich)):
				t.Errorf("err = %v, want AccessDeniedException on %s %s", err, tt.onWhich, tt.denied)
			}
		})
	}

	// Lifted: everything is allowed again.
	if err := s.SetPolicy(nil); err != nil {
		t.Fatal(err)
	}
	if err := get("/molecule/prod/tenants/acme/admin-token"); err != nil {
		t.Errorf("after SetPolicy(nil): %v", err)
	}
}

func TestSetPolicyRefusesWhatItCannotJudge(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	for doc, want := range map[string]string{
		`not json`: "policy",
		`{"Statement": [{"Effect": "Allow", "NotAction": "ssm:PutParameter", "Resource": "*"}]}`: "NotAction is not supported",
		`{"Statement": [{"Effect": "Maybe", "Action": "ssm:GetParameter", "Resource": "*"}]}`:    "Effect must be Allow or Deny",
		`{"Statement": [{"Effect": "Allow", "Action": 7, "Resource": "*"}]}`:                     "Action",
	} {
		if err := s.SetPolicy([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SetPolicy(%s) = %v, want error containing %q", doc, err, want)
		}
	}
}
