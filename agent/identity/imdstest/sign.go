//go:build unix

package imdstest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// signer holds the test CA that signs identity documents, playing the part
// of AWS's published regional certificate.
type signer struct {
	cert *x509.Certificate
	key  *rsa.PrivateKey
	pem  []byte
}

func newSigner() (*signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Country: []string{"US"}, Organization: []string{"imdstest"}, CommonName: "imdstest instance identity CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &signer{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// sign returns the PKCS#7 SignedData over doc as IMDS serves it: base64 in
// 64-column lines without PEM armour, the document embedded, and — like
// AWS — no certificates, so a verifier must supply the trusted one.
func (s *signer) sign(doc []byte) (string, error) {
	sd, err := pkcs7.NewSignedData(doc)
	if err != nil {
		return "", err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSigner(s.cert, s.key, pkcs7.SignerInfoConfig{}); err != nil {
		return "", err
	}
	der, err := sd.Finish()
	if err != nil {
		return "", err
	}
	if der, err = stripCertificates(der); err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString(der)
	var lines []string
	for len(b64) > 64 {
		lines, b64 = append(lines, b64[:64]), b64[64:]
	}
	return strings.Join(append(lines, b64), "\n"), nil
}

// The PKCS#7 shapes needed to drop the certificates field (RFC 2315 §9.1).
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue // [0] EXPLICIT, kept raw
}

type signedData struct {
	Version                    int
	DigestAlgorithmIdentifiers asn1.RawValue
	ContentInfo                asn1.RawValue
	Certificates               asn1.RawValue `asn1:"optional,tag:0"`
	CRLs                       asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos                asn1.RawValue
}

func stripCertificates(der []byte) ([]byte, error) {
	var outer contentInfo
	if _, err := asn1.Unmarshal(der, &outer); err != nil {
		return nil, err
	}
	var sd signedData
	if _, err := asn1.Unmarshal(outer.Content.Bytes, &sd); err != nil {
		return nil, err
	}
	sd.Certificates = asn1.RawValue{}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, err
	}
	outer.Content = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner}
	return asn1.Marshal(outer)
}

// Verify checks an IMDS pkcs7 value against trusted certificates in PEM, the
// way a control plane should: parse, attach the trusted certificates (never
// trust any embedded ones), verify, and return the signed document.
func Verify(pkcs7Base64 string, trustedPEM []byte) ([]byte, error) {
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(strings.TrimSpace(pkcs7Base64), "\n", ""))
	if err != nil {
		return nil, fmt.Errorf("decode pkcs7: %w", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("parse pkcs7: %w", err)
	}
	var certs []*x509.Certificate
	for rest := trustedPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse trusted certificate: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no trusted certificate")
	}
	p7.Certificates = certs
	if err := p7.Verify(); err != nil {
		return nil, fmt.Errorf("verify pkcs7: %w", err)
	}
	return p7.Content, nil
}
