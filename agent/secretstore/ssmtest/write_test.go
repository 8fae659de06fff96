//go:build unix

package ssmtest_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

// writeCode is the AWS error code of err, "" for none.
func writeCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// writer is the real SDK client pointed at s, with no SDK retries.
func writer(t *testing.T, s *ssmtest.Server) *ssm.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return ssm.New(ssm.Options{
		Region: ssmtest.Region, BaseEndpoint: aws.String(s.URL), Credentials: s.Credentials(),
		HTTPClient: &http.Client{Transport: tr}, RetryMaxAttempts: 1,
	})
}

func TestPutParameter(t *testing.T) {
	t.Parallel()
	const name = "/molecule/prod/tenants/acme/admin-token"
	put := func(value string, typ types.ParameterType, overwrite bool, tags ...types.Tag) *ssm.PutParameterInput {
		return &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(value), Type: typ, Overwrite: aws.Bool(overwrite), Tags: tags}
	}
	tests := []struct {
		name     string
		seed     func(s *ssmtest.Server)
		in       *ssm.PutParameterInput
		wantCode string
		wantVer  int64
		wantVal  string
	}{
		{name: "create", in: put("v1", types.ParameterTypeSecureString, false), wantVer: 1, wantVal: "v1"},
		{name: "exists without overwrite", seed: func(s *ssmtest.Server) { s.PutSecure(name, "old") },
			in: put("v2", types.ParameterTypeSecureString, false), wantCode: "ParameterAlreadyExists", wantVal: "old"},
		{name: "overwrite", seed: func(s *ssmtest.Server) { s.PutSecure(name, "old") },
			in: put("v2", types.ParameterTypeSecureString, true), wantVer: 2, wantVal: "v2"},
		{name: "overwrite with tags", seed: func(s *ssmtest.Server) { s.PutSecure(name, "old") },
			in: put("v2", types.ParameterTypeSecureString, true, types.Tag{Key: aws.String("k"), Value: aws.String("v")}), wantCode: "ValidationException", wantVal: "old"},
		{name: "new without type", in: put("v1", "", false), wantCode: "ValidationException"},
		{name: "too large", in: put(strings.Repeat("x", 4097), types.ParameterTypeSecureString, false), wantCode: "ValidationException"},
		{name: "reserved name", in: &ssm.PutParameterInput{Name: aws.String("/aws/x"), Value: aws.String("value-1"), Type: types.ParameterTypeString}, wantCode: "ValidationException"},
		{name: "denied", seed: func(s *ssmtest.Server) { s.Deny("/molecule/prod/tenants/acme") },
			in: put("v1", types.ParameterTypeSecureString, false), wantCode: "AccessDeniedException"},
		{name: "throttled", seed: func(s *ssmtest.Server) { s.Throttle(1) },
			in: put("v1", types.ParameterTypeSecureString, false), wantCode: "ThrottlingException"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ssmtest.New(t)
			if tt.seed != nil {
				tt.seed(s)
			}
			out, err := writer(t, s).PutParameter(t.Context(), tt.in)
			if got := writeCode(err); got != tt.wantCode {
				t.Fatalf("PutParameter error = %v, want code %q", err, tt.wantCode)
			}
			if err == nil && out.Version != tt.wantVer {
				t.Errorf("version = %d, want %d", out.Version, tt.wantVer)
			}
			if err != nil && strings.Contains(err.Error(), aws.ToString(tt.in.Value)) {
				t.Errorf("error %q holds the value", err)
			}
			_, val, ok := s.Value(name)
			if ok != (tt.wantVal != "") || val != tt.wantVal {
				t.Errorf("stored value = %q (present %v), want %q", val, ok, tt.wantVal)
			}
		})
	}
}

func TestPutParameterSecureStringRoundTrip(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	c := writer(t, s)
	const name = "/molecule/prod/tenants/acme/db-password"
	if _, err := c.PutParameter(t.Context(), &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String("pw-1"), Type: types.ParameterTypeSecureString}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if v := aws.ToString(got.Parameter.Value); v == "pw-1" || got.Parameter.Type != types.ParameterTypeSecureString {
		t.Errorf("undecrypted read = %q type %s, want ciphertext of a SecureString", v, got.Parameter.Type)
	}
	got, err = c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil || aws.ToString(got.Parameter.Value) != "pw-1" {
		t.Errorf("decrypted read = %v, %v; want pw-1", got, err)
	}
}

func TestDeleteParameters(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	c := writer(t, s)
	s.PutSecure("/molecule/prod/tenants/acme/a", "1")
	s.PutSecure("/molecule/prod/tenants/acme/b", "2")
	s.PutSecure("/molecule/prod/tenants/other/a", "3")

	out, err := c.DeleteParameters(t.Context(), &ssm.DeleteParametersInput{Names: []string{
		"/molecule/prod/tenants/acme/a", "/molecule/prod/tenants/acme/b", "/molecule/prod/tenants/acme/gone"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.DeletedParameters, []string{"/molecule/prod/tenants/acme/a", "/molecule/prod/tenants/acme/b"}) ||
		!slices.Equal(out.InvalidParameters, []string{"/molecule/prod/tenants/acme/gone"}) {
		t.Errorf("deleted %v invalid %v, want a and b deleted, gone invalid", out.DeletedParameters, out.InvalidParameters)
	}
	if got := s.Names("/molecule"); !slices.Equal(got, []string{"/molecule/prod/tenants/other/a"}) {
		t.Errorf("left = %v, want only the other tenant's parameter", got)
	}

	_, err = c.DeleteParameters(t.Context(), &ssm.DeleteParametersInput{Names: make([]string, 11)})
	if writeCode(err) != "ValidationException" {
		t.Errorf("11 names: error %v, want ValidationException", err)
	}
	s.Deny("/molecule/prod/tenants/other")
	_, err = c.DeleteParameters(t.Context(), &ssm.DeleteParametersInput{Names: []string{"/molecule/prod/tenants/other/a"}})
	if writeCode(err) != "AccessDeniedException" || !strings.Contains(err.Error(), "ssm:DeleteParameters") {
		t.Errorf("denied: error %v, want AccessDeniedException naming ssm:DeleteParameters", err)
	}
	if got := s.Names("/molecule"); len(got) != 1 {
		t.Errorf("a denied delete removed something: left %v", got)
	}
}
