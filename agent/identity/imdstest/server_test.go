//go:build unix

package imdstest_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/smallstep/pkcs7"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func do(t *testing.T, c *http.Client, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestTokenFlow(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	c := httpClient(t)
	const ttl = "X-aws-ec2-metadata-token-ttl-seconds"
	iid := s.URL + "/latest/meta-data/instance-id"

	tests := []struct {
		name   string
		method string
		url    string
		hdr    map[string]string
		want   int
	}{
		{"get without token", http.MethodGet, iid, nil, http.StatusUnauthorized},
		{"get with a made-up token", http.MethodGet, iid, map[string]string{"X-aws-ec2-metadata-token": "nope"}, http.StatusUnauthorized},
		{"token without ttl", http.MethodPut, s.URL + "/latest/api/token", nil, http.StatusBadRequest},
		{"token ttl 0", http.MethodPut, s.URL + "/latest/api/token", map[string]string{ttl: "0"}, http.StatusBadRequest},
		{"token ttl too long", http.MethodPut, s.URL + "/latest/api/token", map[string]string{ttl: "21601"}, http.StatusBadRequest},
		{"token through a proxy", http.MethodPut, s.URL + "/latest/api/token", map[string]string{ttl: "60", "X-Forwarded-For": "10.0.0.1"}, http.StatusForbidden},
		{"token with GET", http.MethodGet, s.URL + "/latest/api/token", map[string]string{ttl: "60"}, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		if got, _ := do(t, c, tt.method, tt.url, tt.hdr); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}

	code, tok := do(t, c, http.MethodPut, s.URL+"/latest/api/token", map[string]string{ttl: "60"})
	if code != http.StatusOK || tok == "" {
		t.Fatalf("token PUT = %d %q, want 200 and a token", code, tok)
	}
	auth := map[string]string{"X-aws-ec2-metadata-token": tok}
	if code, body := do(t, c, http.MethodGet, iid, auth); code != http.StatusOK || body != imdstest.DefaultInstance.InstanceID {
		t.Errorf("instance-id with token = %d %q, want 200 %s", code, body, imdstest.DefaultInstance.InstanceID)
	}
	if code, _ := do(t, c, http.MethodGet, s.URL+"/latest/meta-data/spot/instance-action", auth); code != http.StatusNotFound {
		t.Errorf("spot/instance-action before a notice = %d, want 404", code)
	}
	if code, _ := do(t, c, http.MethodGet, s.URL+"/latest/meta-data/tags/instance", auth); code != http.StatusNotFound {
		t.Errorf("tags/instance with tags off = %d, want 404", code)
	}
	s.ExpireTokens()
	if code, _ := do(t, c, http.MethodGet, iid, auth); code != http.StatusUnauthorized {
		t.Errorf("instance-id with an expired token = %d, want 401", code)
	}
	if st := s.Stats(); st.V1Served != 0 || st.Unauthorized != 3 || st.TokensIssued != 1 {
		t.Errorf("stats = %+v, want 0 v1 answers, 3 unauthorized, 1 token", st)
	}
}

// TestV1OnlyServesAFallingBackClient shows the v1-only mode works: the
// SDK's default client falls back to IMDSv1 and reads metadata.
func TestV1OnlyServesAFallingBackClient(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{InstanceID: "i-0fallback"})
	s.SetV1Only(true)
	c := imds.New(imds.Options{Endpoint: s.URL, HTTPClient: httpClient(t), ClientEnableState: imds.ClientEnabled})
	out, err := c.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: "instance-id"})
	if err != nil {
		t.Fatalf("default client against v1-only server: %v", err)
	}
	b, _ := io.ReadAll(out.Content)
	_ = out.Content.Close()
	if string(b) != "i-0fallback" || s.Stats().V1Served != 1 {
		t.Errorf("got %q with %d v1 answers, want i-0fallback via one v1 answer", b, s.Stats().V1Served)
	}
}

func TestPKCS7(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	other := imdstest.New(t, imdstest.Instance{})
	c := imds.New(imds.Options{Endpoint: s.URL, HTTPClient: httpClient(t), ClientEnableState: imds.ClientEnabled})
	get := func(ctx context.Context, p string) string {
		out, err := c.GetDynamicData(ctx, &imds.GetDynamicDataInput{Path: p})
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		defer func() { _ = out.Content.Close() }()
		b, _ := io.ReadAll(out.Content)
		return string(b)
	}
	doc, sig := get(t.Context(), "instance-identity/document"), get(t.Context(), "instance-identity/pkcs7")
	if !strings.Contains(doc, `"instanceId" : "i-0123456789abcdef0"`) || !strings.Contains(doc, `"accountId" : "123456789012"`) {
		t.Errorf("document = %s, want the default instance and account", doc)
	}
	if strings.Contains(sig, "BEGIN") || strings.Count(sig, "\n") == 0 {
		t.Errorf("pkcs7 should be bare base64 in lines like IMDS, got %.80q", sig)
	}

	got, err := imdstest.Verify(sig, s.CAPEM())
	if err != nil || !bytes.Equal(got, []byte(doc)) {
		t.Fatalf("Verify with the right CA = %q, %v; want the document", got, err)
	}
	if _, err := imdstest.Verify(sig, other.CAPEM()); err == nil {
		t.Error("Verify with another CA succeeded")
	}

	der, _ := base64.StdEncoding.DecodeString(strings.ReplaceAll(sig, "\n", ""))
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(p7.Certificates) != 0 {
		t.Errorf("pkcs7 embeds %d certificates, want none (like AWS)", len(p7.Certificates))
	}
	if err := p7.Verify(); err == nil {
		t.Error("pkcs7 verified without a trusted certificate")
	}
	tampered := strings.Replace(doc, "123456789012", "999999999999", 1)
	if bytes.Equal(p7.Content, []byte(tampered)) {
		t.Fatal("tamper did not change the document")
	}
}

func TestNoticesAndTags(t *testing.T) {
	t.Parallel()
	s := imdstest.New(t, imdstest.Instance{})
	c := imds.New(imds.Options{Endpoint: s.URL, HTTPClient: httpClient(t), ClientEnableState: imds.ClientEnabled})
	get := func(p string) (string, error) {
		out, err := c.GetMetadata(t.Context(), &imds.GetMetadataInput{Path: p})
		if err != nil {
			return "", err
		}
		defer func() { _ = out.Content.Close() }()
		b, _ := io.ReadAll(out.Content)
		return string(b), nil
	}
	if _, err := get("autoscaling/target-lifecycle-state"); err == nil {
		t.Error("lifecycle state before SetLifecycleState: want 404")
	}
	s.SetLifecycleState("InService")
	s.EnableTags(map[string]string{"Name": "acme-tenant", "molecule:org": "acme"})
	for p, want := range map[string]string{
		"autoscaling/target-lifecycle-state": "InService",
		"tags/instance":                      "Name\nmolecule:org",
		"tags/instance/molecule:org":         "acme",
		"placement/availability-zone":        "us-east-2a",
		"local-ipv4":                         "10.0.1.23",
	} {
		if got, err := get(p); err != nil || got != want {
			t.Errorf("%s = %q, %v; want %q", p, got, err, want)
		}
	}
}
