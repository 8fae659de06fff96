// Package attest checks the proofs a host registers with: the EC2 instance
// identity document signed as PKCS#7 by AWS (verified against configured
// certificates, fresh, read only from its signed content), and off EC2 an
// enrollment token (hashed, compared in constant time).
package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// Errors from Verify; match with errors.Is.
var (
	// ErrMalformed: the proof is not a PKCS#7 signed identity document.
	ErrMalformed = errors.New("malformed identity document")
	// ErrBadSignature: no configured certificate signed the document.
	ErrBadSignature = errors.New("identity document signature does not verify")
	// ErrStale: pendingTime is outside the freshness window.
	ErrStale = errors.New("identity document pendingTime outside the freshness window")
)

// Document holds the fields of the instance identity document the control
// plane uses, taken from the signed content only.
type Document struct {
	InstanceID       string    `json:"instanceId"`
	AccountID        string    `json:"accountId"`
	Region           string    `json:"region"`
	AvailabilityZone string    `json:"availabilityZone"`
	ImageID          string    `json:"imageId"`
	InstanceType     string    `json:"instanceType"`
	Architecture     string    `json:"architecture"`
	PrivateIP        string    `json:"privateIp"`
	PendingTime      time.Time `json:"pendingTime"`
}

// Verifier verifies instance identity PKCS#7 signatures.
type Verifier struct {
	certs []*x509.Certificate
	// window bounds how old pendingTime may be (instance launch to
	// registration); skew bounds how far in the future it may be.
	window, skew time.Duration
}

// NewVerifier trusts certs (AWS's per-region instance identity
// certificates; a test CA in tests) and accepts documents whose pendingTime
// is at most window old.
func NewVerifier(certs []*x509.Certificate, window time.Duration) (*Verifier, error) {
	if len(certs) == 0 {
		return nil, errors.New("attestation: no AWS certificates configured: pass --aws-cert with the region's instance identity certificate")
	}
	if window <= 0 {
		return nil, errors.New("attestation: freshness window must be positive")
	}
	return &Verifier{certs: certs, window: window, skew: 5 * time.Minute}, nil
}

// ParseCertificatesPEM parses every CERTIFICATE block in b.
func ParseCertificatesPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return out, nil
}

// decodePKCS7 accepts the IMDS form (base64, possibly wrapped) or PEM.
func decodePKCS7(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "-----BEGIN") {
		blk, _ := pem.Decode([]byte(s))
		if blk == nil {
			return nil, ErrMalformed
		}
		return blk.Bytes, nil
	}
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
	der, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrMalformed
	}
	return der, nil
}

// Verify checks the PKCS#7 against the configured certificates only (any
// certificate embedded in it is ignored), parses the document from the signed
// content, and checks pendingTime against now (on ErrStale the verified
// document is returned too). When plainDoc is not empty it
// must equal the signed content.
func (v *Verifier) Verify(pkcs7B64, plainDoc string, now time.Time) (Document, error) {
	der, err := decodePKCS7(pkcs7B64)
	if err != nil {
		return Document{}, err
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		return Document{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(p7.Content) == 0 || len(p7.Signers) == 0 {
		return Document{}, fmt.Errorf("%w: no signed content", ErrMalformed)
	}
	// Trust only our certificates: an attacker can embed any certificate.
	p7.Certificates = v.certs
	if err := p7.Verify(); err != nil {
		return Document{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if plainDoc != "" && !bytes.Equal(bytes.TrimSpace([]byte(plainDoc)), bytes.TrimSpace(p7.Content)) {
		return Document{}, fmt.Errorf("%w: identity_document differs from the signed content", ErrMalformed)
	}
	var d Document
	if err := json.Unmarshal(p7.Content, &d); err != nil {
		return Document{}, fmt.Errorf("%w: signed content: %v", ErrMalformed, err)
	}
	if d.InstanceID == "" || d.PendingTime.IsZero() {
		return Document{}, fmt.Errorf("%w: signed content lacks instanceId or pendingTime", ErrMalformed)
	}
	if age := now.Sub(d.PendingTime); age > v.window || age < -v.skew {
		// The document is authentic, so return it: a host that presents its
		// current token may register again with an old document.
		return d, fmt.Errorf("%w: instance %s launched %s ago, window is %s", ErrStale, d.InstanceID, age.Round(time.Second), v.window)
	}
	return d, nil
}
