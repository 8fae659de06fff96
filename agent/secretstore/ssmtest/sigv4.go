//go:build unix

package ssmtest

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDate      = "20060102T150405Z"
	maxSkew      = 15 * time.Minute
)

var errSignatureMismatch = &apiError{http.StatusBadRequest, "InvalidSignatureException",
	"The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}

// authHeader is a parsed SigV4 Authorization header.
type authHeader struct {
	accessKey, date, region, service string
	signedHeaders                    []string
	signature                        string
}

func parseAuth(h string) (authHeader, bool) {
	var a authHeader
	rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
	if !ok {
		return a, false
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, false
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, false
			}
			a.accessKey, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	return a, a.accessKey != "" && len(a.signedHeaders) > 0 && a.signature != ""
}

// verify recomputes the request's SigV4 signature with the secret key of its
// access key, using the SDK's own signer, and answers like SSM on a mismatch.
func (s *Server) verify(r *http.Request, body []byte) *apiError {
	h := r.Header.Get("Authorization")
	if h == "" {
		return &apiError{http.StatusBadRequest, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	a, ok := parseAuth(h)
	if !ok {
		return &apiError{http.StatusBadRequest, "IncompleteSignatureException",
			"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."}
	}
	s.mu.Lock()
	secret, known := s.keys[a.accessKey]
	now := s.now()
	s.mu.Unlock()
	if !known {
		return &apiError{http.StatusBadRequest, "UnrecognizedClientException", "The security token included in the request is invalid."}
	}
	if a.region != Region || a.service != "ssm" {
		return &apiError{http.StatusBadRequest, "InvalidSignatureException", "Credential should be scoped to a valid region."}
	}
	when, err := time.Parse(amzDate, r.Header.Get("X-Amz-Date"))
	if err != nil || when.Format("20060102") != a.date {
		return errSignatureMismatch
	}
	if d := now.Sub(when); d > maxSkew || d < -maxSkew {
		return &apiError{http.StatusBadRequest, "InvalidSignatureException",
			"Signature expired: " + when.Format(amzDate) + " is now earlier than " + now.Add(-maxSkew).UTC().Format(amzDate)}
	}

	re, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return errSignatureMismatch
	}
	re.Host = r.Host
	for _, name := range a.signedHeaders {
		switch name {
		case "host":
		case "content-length":
			re.ContentLength = int64(len(body))
		default:
			re.Header[http.CanonicalHeaderKey(name)] = r.Header.Values(name)
		}
	}
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: a.accessKey, SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, re, hex.EncodeToString(sum[:]), a.service, a.region, when); err != nil {
		return errSignatureMismatch
	}
	want, ok := parseAuth(re.Header.Get("Authorization"))
	if !ok || strings.Join(want.signedHeaders, ";") != strings.Join(a.signedHeaders, ";") ||
		subtle.ConstantTimeCompare([]byte(want.signature), []byte(a.signature)) != 1 {
		return errSignatureMismatch
	}
	return nil
}
