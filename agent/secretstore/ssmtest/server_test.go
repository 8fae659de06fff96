//go:build unix

package ssmtest_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/aws/smithy-go"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client returns the real SDK client pointed at s, making at most attempts tries.
func client(t *testing.T, s *ssmtest.Server, creds aws.CredentialsProvider, attempts int) *ssm.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return ssm.New(ssm.Options{
		Region:           ssmtest.Region,
		BaseEndpoint:     aws.String(s.URL),
		Credentials:      creds,
		HTTPClient:       &http.Client{Transport: tr},
		RetryMaxAttempts: attempts,
	})
}

func seed(s *ssmtest.Server) {
	s.PutSecure("/molecule/prod/tenants/acme/tunnel-token", "tok-1")
	s.PutSecure("/molecule/prod/tenants/acme/admin-token", "adm-1")
	s.Put("/molecule/prod/tenants/acme/db/password", "pw-1")
	s.Put("/molecule/prod/tenants/acme/db/user", "molecule")
	s.Put("/molecule/prod/tenants/acme/region", "us-east-1")
	s.Put("/molecule/prod/tenants/other/tunnel-token", "other")
}

func byPath(t *testing.T, c *ssm.Client, path string, recursive, decrypt bool, pageSize int32) (map[string]types.Parameter, int) {
	t.Helper()
	p := ssm.NewGetParametersByPathPaginator(c, &ssm.GetParametersByPathInput{
		Path: aws.String(path), Recursive: aws.Bool(recursive), WithDecryption: aws.Bool(decrypt), MaxResults: aws.Int32(pageSize),
	})
	got, pages := map[string]types.Parameter{}, 0
	for p.HasMorePages() {
		out, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("GetParametersByPath(%s): %v", path, err)
		}
		pages++
		for _, prm := range out.Parameters {
			got[aws.ToString(prm.Name)] = prm
		}
	}
	return got, pages
}

func TestGetParametersByPath(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	c := client(t, s, s.Credentials(), 1)
	const base = "/molecule/prod/tenants/acme"

	got, pages := byPath(t, c, base, true, true, 2)
	if len(got) != 5 || pages != 3 {
		t.Fatalf("recursive: got %d parameters in %d pages, want 5 in 3", len(got), pages)
	}
	if v := aws.ToString(got[base+"/tunnel-token"].Value); v != "tok-1" {
		t.Errorf("decrypted tunnel-token = %q, want tok-1", v)
	}
	if typ := got[base+"/tunnel-token"].Type; typ != types.ParameterTypeSecureString {
		t.Errorf("type = %q, want SecureString", typ)
	}
	if got[base+"/db/password"].Version != 1 || got[base+"/db/password"].LastModifiedDate == nil {
		t.Errorf("db/password metadata = %+v, want version 1 and a date", got[base+"/db/password"])
	}

	flat, _ := byPath(t, c, base, false, true, 10)
	if _, nested := flat[base+"/db/user"]; nested || len(flat) != 3 {
		t.Errorf("non-recursive got %d parameters (nested included: %v), want the 3 direct children", len(flat), nested)
	}

	enc, _ := byPath(t, c, base, true, false, 10)
	v := aws.ToString(enc[base+"/tunnel-token"].Value)
	if v == "tok-1" || !strings.HasPrefix(v, "AQICAH") {
		t.Errorf("SecureString without decryption = %q, want an opaque ciphertext", v)
	}
	if v := aws.ToString(enc[base+"/db/user"].Value); v != "molecule" {
		t.Errorf("String without decryption = %q, want molecule", v)
	}

	if !s.Rotate(base+"/tunnel-token", "tok-2") {
		t.Fatal("Rotate: parameter not found")
	}
	rot, _ := byPath(t, c, base, true, true, 10)
	if p := rot[base+"/tunnel-token"]; aws.ToString(p.Value) != "tok-2" || p.Version != 2 {
		t.Errorf("after rotate: value %q version %d, want tok-2 version 2", aws.ToString(p.Value), p.Version)
	}
	for _, r := range s.Requests() {
		if r.Op != "GetParametersByPath" || r.Status != http.StatusOK {
			t.Errorf("request %+v, want successful GetParametersByPath", r)
		}
	}
}

func TestGetParameterAndParameters(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	c := client(t, s, s.Credentials(), 1)

	out, err := c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/molecule/prod/tenants/acme/admin-token"), WithDecryption: aws.Bool(true)})
	if err != nil || aws.ToString(out.Parameter.Value) != "adm-1" {
		t.Fatalf("GetParameter = %v, %v; want adm-1", out, err)
	}
	_, err = c.GetParameter(t.Context(), &ssm.GetParameterInput{Name: aws.String("/nope")})
	var nf *types.ParameterNotFound
	if !errors.As(err, &nf) {
		t.Fatalf("GetParameter(/nope) error = %v, want *types.ParameterNotFound", err)
	}

	many, err := c.GetParameters(t.Context(), &ssm.GetParametersInput{Names: []string{"/molecule/prod/tenants/acme/region", "/nope"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(many.Parameters) != 1 || !slices.Equal(many.InvalidParameters, []string{"/nope"}) {
		t.Errorf("GetParameters = %d found, invalid %v; want 1 and [/nope]", len(many.Parameters), many.InvalidParameters)
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestErrors(t *testing.T) {
	t.Parallel()
	call := func(ctx context.Context, c *ssm.Client, path string, maxResults int32, token *string) error {
		_, err := c.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String(path), MaxResults: aws.Int32(maxResults), NextToken: token})
		return err
	}
	tests := []struct {
		name     string
		setup    func(s *ssmtest.Server)
		wrongKey bool
		path     string
		max      int32
		token    *string
		wantCode string
		wantMsg  string
	}{
		{name: "denied prefix", setup: func(s *ssmtest.Server) { s.Deny("/molecule/prod/tenants/acme") },
			path: "/molecule/prod/tenants/acme", wantCode: "AccessDeniedException", wantMsg: "ssm:GetParametersByPath"},
		{name: "throttled", setup: func(s *ssmtest.Server) { s.Throttle(1) },
			path: "/molecule", wantCode: "ThrottlingException", wantMsg: "Rate exceeded"},
		{name: "wrong secret key", wrongKey: true,
			path: "/molecule", wantCode: "InvalidSignatureException", wantMsg: "signature we calculated does not match"},
		{name: "max results too big", path: "/molecule", max: 50, wantCode: "ValidationException", wantMsg: "maxResults"},
		{name: "bad token", path: "/molecule", token: aws.String("garbage"), wantCode: "InvalidNextToken"},
		{name: "relative path", path: "molecule", wantCode: "ValidationException", wantMsg: "forward slash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ssmtest.New(t)
			seed(s)
			if tt.setup != nil {
				tt.setup(s)
			}
			creds := s.Credentials()
			if tt.wrongKey {
				creds = s.WrongCredentials()
			}
			max := tt.max
			if max == 0 {
				max = 10
			}
			err := call(t.Context(), client(t, s, creds, 1), tt.path, max, tt.token)
			if got := apiCode(err); got != tt.wantCode {
				t.Fatalf("error code = %q (err %v), want %q", got, err, tt.wantCode)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestAccessDeniedIsTyped(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	s.Deny("/molecule/prod")
	_, err := client(t, s, s.Credentials(), 1).GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String("/molecule/prod/tenants/acme")})
	var ad *types.AccessDeniedException
	if !errors.As(err, &ad) {
		t.Fatalf("error = %v, want *types.AccessDeniedException", err)
	}
	s.AllowAll()
	if _, err := client(t, s, s.Credentials(), 1).GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String("/molecule/prod/tenants/acme")}); err != nil {
		t.Fatalf("after AllowAll: %v", err)
	}
}

func TestThrottleRetriedBySDK(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	s.Throttle(2)
	got, _ := byPath(t, client(t, s, s.Credentials(), 5), "/molecule/prod/tenants/acme", true, true, 10)
	if len(got) != 5 {
		t.Errorf("got %d parameters, want 5", len(got))
	}
	if n := s.Count("GetParametersByPath", "ThrottlingException"); n != 2 {
		t.Errorf("throttled requests = %d, want 2", n)
	}
}

func TestDownModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []ssmtest.DownMode{ssmtest.DownReset, ssmtest.Down503} {
		s := ssmtest.New(t)
		seed(s)
		c := client(t, s, s.Credentials(), 1)
		s.SetDown(mode)
		_, err := c.GetParametersByPath(t.Context(), &ssm.GetParametersByPathInput{Path: aws.String("/molecule")})
		if err == nil {
			t.Fatalf("mode %d: request succeeded while down", mode)
		}
		var re *awshttp.ResponseError
		if mode == ssmtest.Down503 && (!errors.As(err, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable) {
			t.Errorf("mode 503: error %v, want an HTTP 503 response error", err)
		}
		s.SetDown(ssmtest.Up)
		if got, _ := byPath(t, c, "/molecule/prod/tenants/acme", true, true, 10); len(got) != 5 {
			t.Errorf("mode %d: after Up got %d parameters, want 5", mode, len(got))
		}
	}
}

func TestRawRequestWithoutSignature(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL, strings.NewReader(`{"Path":"/molecule"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "AmazonSSM.GetParametersByPath")
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || s.Count("", "MissingAuthenticationTokenException") != 1 {
		t.Errorf("unsigned request: status %d, requests %+v; want 400 MissingAuthenticationTokenException", resp.StatusCode, s.Requests())
	}
}

// TestSigV4RawRequests signs requests by hand with the SDK's signer: a
// correct one passes, a changed body or a stale date does not.
func TestSigV4RawRequests(t *testing.T) {
	t.Parallel()
	s := ssmtest.New(t)
	seed(s)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	send := func(signed, sent string, at time.Time) (int, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/", strings.NewReader(signed))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Amz-Target", "AmazonSSM.GetParametersByPath")
		req.Header.Set("Content-Type", "application/x-amz-json-1.1")
		sum := sha256.Sum256([]byte(signed))
		creds := aws.Credentials{AccessKeyID: ssmtest.AccessKeyID, SecretAccessKey: ssmtest.SecretAccessKey}
		if err := v4.NewSigner().SignHTTP(t.Context(), creds, req, hex.EncodeToString(sum[:]), "ssm", ssmtest.Region, at); err != nil {
			t.Fatal(err)
		}
		req.Body = io.NopCloser(strings.NewReader(sent))
		req.ContentLength = int64(len(sent))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const body = `{"Path":"/molecule/prod/tenants/acme","Recursive":true}`
	const other = `{"Path":"/molecule/prod/tenants/othr","Recursive":true}`
	tests := []struct {
		name       string
		sent       string
		at         time.Time
		wantStatus int
		wantBody   string
	}{
		{"signed correctly", body, time.Now(), http.StatusOK, `"Parameters"`},
		{"body changed after signing", other, time.Now(), http.StatusBadRequest, `"__type":"InvalidSignatureException"`},
		{"signed 20 minutes ago", body, time.Now().Add(-20 * time.Minute), http.StatusBadRequest, "Signature expired"},
	}
	for _, tt := range tests {
		if code, got := send(body, tt.sent, tt.at); code != tt.wantStatus || !strings.Contains(got, tt.wantBody) {
			t.Errorf("%s: %d %s, want %d with %s", tt.name, code, got, tt.wantStatus, tt.wantBody)
		}
	}
}
