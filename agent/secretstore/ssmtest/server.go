//go:build unix

// Package ssmtest is an AWS Systems Manager Parameter Store double that speaks
// the real wire protocol: awsJson1.1 over HTTP with SigV4 checked on every
// request. Tests drive it with the real aws-sdk-go-v2 ssm client through
// BaseEndpoint and the static credentials it hands out, and inject faults
// (denied prefixes, throttling, an unreachable endpoint, rotated values)
// through its methods. Given an IAM policy (SetPolicy, e.g. a rendered
// template of packaging/iam) it answers AccessDeniedException for every
// read outside the policy's grant, as IAM does.
package ssmtest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// Defaults the server is created with.
const (
	// Region is the only region the server accepts in a SigV4 credential scope.
	Region = "us-east-1"
	// Account is the account ID in ARNs and access-denied messages.
	Account = "123456789012"
	// AccessKeyID is the access key the server knows.
	AccessKeyID = "AKIDSSMTESTEXAMPLE"
	// SecretAccessKey is the secret key paired with AccessKeyID.
	SecretAccessKey = "ssmtest/secret/key/EXAMPLEKEY0123456789"
	// WrongSecretAccessKey is the secret key WrongCredentials signs with.
	WrongSecretAccessKey = "not-the-secret-key"
	// RoleName is the role named in access-denied messages.
	RoleName = "molecule-agent"
)

// Parameter types, as on the wire.
const (
	String       = "String"
	StringList   = "StringList"
	SecureString = "SecureString"
)

// DownMode says how the server behaves while it is "down".
type DownMode int

// Down modes.
const (
	// Up serves requests normally.
	Up DownMode = iota
	// DownReset closes every connection without a response, like a
	// blackholed or restarting endpoint.
	DownReset
	// Down503 answers every request with 503 Service Unavailable.
	Down503
)

// Request records one request the server received, for assertions.
type Request struct {
	// Op is the operation from X-Amz-Target without its prefix, e.g. GetParametersByPath.
	Op string
	// Path is the Path of GetParametersByPath.
	Path string
	// Names are the names of GetParameter and GetParameters.
	Names []string
	// WithDecryption is the request's WithDecryption flag.
	WithDecryption bool
	// Status is the HTTP status answered (0 when the connection was closed).
	Status int
	// ErrorCode is the __type of an error answer, empty on success.
	ErrorCode string
}

type param struct {
	name     string
	typ      string
	value    string
	version  int64
	modified time.Time
}

// Server is a running fake SSM endpoint. Its methods are safe for concurrent use.
type Server struct {
	// URL is the endpoint to give the client as BaseEndpoint.
	URL string

	srv    *httptest.Server
	kmsKey []byte

	mu        sync.Mutex
	params    map[string]*param
	keys      map[string]string // access key ID -> secret access key
	denied    []string
	policy    *policy
	throttleN int
	down      DownMode
	requests  []Request
	now       func() time.Time
}

// New starts a server and stops it when tb's test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		params: map[string]*param{},
		keys:   map[string]string{AccessKeyID: SecretAccessKey},
		kmsKey: make([]byte, 32),
		now:    time.Now,
	}
	_, _ = rand.Read(s.kmsKey)
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server and closes its connections.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// Credentials returns a provider of the static credentials the server accepts.
func (s *Server) Credentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")
}

// WrongCredentials returns a provider with the known access key and a wrong
// secret key: every request it signs fails SigV4 verification.
func (s *Server) WrongCredentials() aws.CredentialsProvider {
	return credentials.NewStaticCredentialsProvider(AccessKeyID, WrongSecretAccessKey, "")
}

// AcceptKey makes the server accept accessKey signed with secretKey,
// replacing any previous secret for it (a key rotation).
func (s *Server) AcceptKey(accessKey, secretKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[accessKey] = secretKey
}

// Put creates or overwrites a String parameter, bumping its version.
func (s *Server) Put(name, value string) { s.put(name, String, value) }

// PutSecure creates or overwrites a SecureString parameter, bumping its version.
func (s *Server) PutSecure(name, value string) { s.put(name, SecureString, value) }

// Rotate replaces the value of an existing parameter, keeping its type.
// It reports false when there is no such parameter.
func (s *Server) Rotate(name, value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.params[name]
	if !ok {
		return false
	}
	p.value, p.version, p.modified = value, p.version+1, s.now()
	return true
}

func (s *Server) put(name, typ, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.params[name]
	if !ok {
		p = &param{name: name}
		s.params[name] = p
	}
	p.typ, p.value, p.version, p.modified = typ, value, p.version+1, s.now()
}

// Delete removes a parameter.
func (s *Server) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.params, name)
}

// Deny makes every request for a name or path under prefix fail with
// AccessDeniedException, as when the instance role's policy does not cover it.
func (s *Server) Deny(prefix string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied = append(s.denied, prefix)
}

// AllowAll lifts every Deny.
func (s *Server) AllowAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied = nil
}

// Throttle makes the next n requests fail with ThrottlingException
// (n <= 0 stops throttling).
func (s *Server) Throttle(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.throttleN = max(n, 0)
}

// SetDown switches the endpoint down in the given way, or back Up.
func (s *Server) SetDown(m DownMode) {
	s.mu.Lock()
	s.down = m
	s.mu.Unlock()
	if m == DownReset {
		s.srv.CloseClientConnections()
	}
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count returns how many received requests answered with the error code
// (or succeeded, for code ""), for the given operation ("" for any).
func (s *Server) Count(op, code string) int {
	n := 0
	for _, r := range s.Requests() {
		if (op == "" || r.Op == op) && r.ErrorCode == code && r.Status != 0 {
			n++
		}
	}
	return n
}

// deniedLocked reports whether name (or path) is under a denied prefix.
func (s *Server) deniedLocked(name string) bool {
	for _, p := range s.denied {
		p = strings.TrimSuffix(p, "/")
		if name == p || strings.HasPrefix(name, p+"/") || p == "" {
			return true
		}
	}
	return false
}

// sortedLocked returns the parameters in name order.
func (s *Server) sortedLocked() []*param {
	out := make([]*param, 0, len(s.params))
	for _, p := range s.params {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// ciphertext is what a SecureString looks like without decryption: an opaque
// KMS-envelope-shaped blob that reveals nothing about the value.
func (s *Server) ciphertext(p *param) string {
	m := hmac.New(sha256.New, s.kmsKey)
	m.Write([]byte(p.name))
	m.Write([]byte{0})
	m.Write([]byte(p.value))
	return "AQICAHh" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) arn(name string) string {
	return "arn:aws:ssm:" + Region + ":" + Account + ":parameter" + name
}
