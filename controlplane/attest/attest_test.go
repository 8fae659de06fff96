package attest_test

import (
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/attest/attesttest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

func TestVerify(t *testing.T) {
	t.Parallel()
	ca := attesttest.NewCA(t, "region ca")
	other := attesttest.NewCA(t, "attacker ca")
	now := time.Now()
	v, err := attest.NewVerifier([]*x509.Certificate{ca.Cert}, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh := attesttest.Doc("i-0123", now.Add(-time.Minute))
	signed := ca.Sign(t, fresh)
	tampered := func() string {
		der, _ := base64.StdEncoding.DecodeString(signed)
		i := strings.Index(string(der), "i-0123")
		der[i+2] = '9' // i-0923: content changed after signing
		return base64.StdEncoding.EncodeToString(der)
	}()
	wrap := func(s string) string { // IMDS wraps base64 at 64 columns
		var b strings.Builder
		for len(s) > 64 {
			b.WriteString(s[:64] + "\n")
			s = s[64:]
		}
		return b.String() + s
	}
	tests := []struct {
		name    string
		pkcs7   string
		plain   string
		wantErr error
		wantID  string
	}{
		{"valid", signed, "", nil, "i-0123"},
		{"valid wrapped", wrap(signed), "", nil, "i-0123"},
		{"valid with matching plain document", signed, string(fresh) + "\n", nil, "i-0123"},
		{"plain document differs from signed content", signed, string(attesttest.Doc("i-other", now)), attest.ErrMalformed, ""},
		{"signed by an unknown CA", other.Sign(t, fresh), "", attest.ErrBadSignature, ""},
		{"content tampered", tampered, "", attest.ErrBadSignature, ""},
		{"stale pendingTime", ca.Sign(t, attesttest.Doc("i-0123", now.Add(-16*time.Minute))), "", attest.ErrStale, "i-0123"},
		{"pendingTime in the future", ca.Sign(t, attesttest.Doc("i-0123", now.Add(time.Hour))), "", attest.ErrStale, "i-0123"},
		{"signed content not a document", ca.Sign(t, []byte(`{"instanceId":""}`)), "", attest.ErrMalformed, ""},
		{"not base64", "%%%", "", attest.ErrMalformed, ""},
		{"not pkcs7", base64.StdEncoding.EncodeToString([]byte("hello")), "", attest.ErrMalformed, ""},
		{"empty", "", "", attest.ErrMalformed, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := v.Verify(tt.pkcs7, tt.plain, now)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify err = %v, want %v", err, tt.wantErr)
			}
			if d.InstanceID != tt.wantID {
				t.Errorf("instance ID = %q, want %q", d.InstanceID, tt.wantID)
			}
		})
	}
}

func TestParseCertificatesPEM(t *testing.T) {
	t.Parallel()
	ca := attesttest.NewCA(t, "x")
	certs, err := attest.ParseCertificatesPEM(append(ca.PEM(), ca.PEM()...))
	if err != nil || len(certs) != 2 {
		t.Errorf("parse two certs = %d, %v", len(certs), err)
	}
	if _, err := attest.ParseCertificatesPEM([]byte("nope")); err == nil {
		t.Error("parse garbage succeeded")
	}
	if _, err := attest.NewVerifier(nil, time.Minute); err == nil || !strings.Contains(err.Error(), "--aws-cert") {
		t.Errorf("NewVerifier without certs err = %v, want hint at --aws-cert", err)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	tok, hash := attest.NewToken(attest.EnrollmentTokenPrefix)
	tok2, _ := attest.NewToken(attest.EnrollmentTokenPrefix)
	if tok == tok2 || !strings.HasPrefix(tok, "mek_") || len(tok) < 40 {
		t.Errorf("tokens %q %q: want distinct, prefixed, long", tok, tok2)
	}
	if hash != store.HashToken(tok) || strings.Contains(hash, tok) {
		t.Errorf("hash %q is not the SHA-256 of the token", hash)
	}
	tests := []struct {
		hash, presented string
		want            bool
	}{
		{hash, tok, true},
		{hash, tok2, false},
		{hash, "", false},
		{"", tok, false},
		{hash, hash, false},
	}
	for _, tt := range tests {
		if got := attest.TokenMatches(tt.hash, tt.presented); got != tt.want {
			t.Errorf("TokenMatches(%.8s…, %.8s…) = %v, want %v", tt.hash, tt.presented, got, tt.want)
		}
	}
}

func FuzzVerify(f *testing.F) {
	ca := attesttest.NewCA(f, "fuzz")
	v, err := attest.NewVerifier([]*x509.Certificate{ca.Cert}, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.Sign(f, attesttest.Doc("i-1", time.Now())), "")
	f.Add("-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----", "{}")
	f.Add("MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwGggCSABA==", "")
	f.Fuzz(func(t *testing.T, p7, plain string) {
		_, _ = v.Verify(p7, plain, time.Now())
	})
}
