// Package attesttest makes test certificate authorities that sign EC2
// instance identity documents as PKCS#7, the way AWS does, for tests of the
// control plane's attestation.
package attesttest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"
)

// CA is a self-signed signing certificate standing in for an AWS region's
// instance identity certificate.
type CA struct {
	Cert *x509.Certificate
	Key  *rsa.PrivateKey
}

// NewCA makes a CA valid from an hour ago for a day.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Amazon Web Services LLC (test)"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key}
}

// PEM returns the CA certificate in PEM form, as --aws-cert takes it.
func (c *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})
}

// Doc returns an identity document for instanceID launched at pending.
func Doc(instanceID string, pending time.Time) []byte {
	b, _ := json.Marshal(map[string]any{
		"accountId": "123456789012", "architecture": "x86_64", "availabilityZone": "us-east-1a",
		"imageId": "ami-0abcdef1234567890", "instanceId": instanceID, "instanceType": "t3.small",
		"pendingTime": pending.UTC().Format(time.RFC3339), "privateIp": "10.0.0.12",
		"region": "us-east-1", "version": "2017-09-30",
	})
	return b
}

// Sign returns doc signed as base64 PKCS#7 with the content attached, the
// form IMDS serves at /latest/dynamic/instance-identity/pkcs7.
func (c *CA) Sign(t testing.TB, doc []byte) string {
	t.Helper()
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.AddSigner(c.Cert, c.Key, pkcs7.SignerInfoConfig{}); err != nil {
		t.Fatal(err)
	}
	der, err := sd.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}
