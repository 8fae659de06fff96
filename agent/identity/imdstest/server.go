//go:build unix

// Package imdstest is an EC2 Instance Metadata Service double that speaks
// IMDSv2: a session token from PUT /latest/api/token (with a TTL header) is
// required on every GET, which otherwise gets 401. It serves the instance's
// metadata, the instance identity document and its PKCS#7 signature made
// with a test CA (CAPEM), instance tags when enabled, and spot interruption
// and Auto Scaling lifecycle notices on demand. Tests drive it with the real
// aws-sdk-go-v2 imds client.
package imdstest

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Instance is what the server reports about "its" instance. Zero fields
// take the defaults of DefaultInstance.
type Instance struct {
	InstanceID       string
	InstanceType     string
	ImageID          string
	AccountID        string
	Region           string
	AvailabilityZone string
	PrivateIP        string
	Architecture     string
	PendingTime      time.Time
}

// DefaultInstance is the instance a zero Instance becomes.
var DefaultInstance = Instance{
	InstanceID:       "i-0123456789abcdef0",
	InstanceType:     "t3.small",
	ImageID:          "ami-0abcdef1234567890",
	AccountID:        "123456789012",
	Region:           "us-east-2",
	AvailabilityZone: "us-east-2a",
	PrivateIP:        "10.0.1.23",
	Architecture:     "x86_64",
	PendingTime:      time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
}

const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	ttlHeader      = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	maxTokenTTL    = 21600
	metaDataPrefix = "/latest/meta-data/"
)

// Server is a running fake IMDS. Its methods are safe for concurrent use.
type Server struct {
	// URL is the endpoint to give the imds client.
	URL string

	srv    *httptest.Server
	signer *signer

	mu        sync.Mutex
	inst      Instance
	tokens    map[string]time.Time // token -> expiry
	v1Only    bool
	tags      map[string]string // nil: tags not enabled
	spot      string            // spot/instance-action JSON, "" until set
	lifecycle string            // autoscaling/target-lifecycle-state, "" until set
	role      string            // instance profile role name, "" for none
	roleCreds string            // its security-credentials JSON
	stats     Stats
}

// Stats counts what the server saw.
type Stats struct {
	TokensIssued int // successful token PUTs
	TokenRefused int // token PUTs refused (bad TTL, X-Forwarded-For, v1-only mode)
	Unauthorized int // GETs answered 401 (no, unknown or expired token)
	V1Served     int // GETs without a token that were answered (v1-only mode)
	GETs         int // all GETs
}

// New starts a server for inst and stops it when tb's test ends.
func New(tb testing.TB, inst Instance) *Server {
	tb.Helper()
	sg, err := newSigner()
	if err != nil {
		tb.Fatalf("imdstest: make CA: %v", err)
	}
	s := &Server{signer: sg, inst: withDefaults(inst), tokens: map[string]time.Time{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.srv.URL
	tb.Cleanup(s.Close)
	return s
}

func withDefaults(i Instance) Instance {
	d := DefaultInstance
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	i.InstanceID = pick(i.InstanceID, d.InstanceID)
	i.InstanceType = pick(i.InstanceType, d.InstanceType)
	i.ImageID = pick(i.ImageID, d.ImageID)
	i.AccountID = pick(i.AccountID, d.AccountID)
	i.Region = pick(i.Region, d.Region)
	i.AvailabilityZone = pick(i.AvailabilityZone, d.AvailabilityZone)
	i.PrivateIP = pick(i.PrivateIP, d.PrivateIP)
	i.Architecture = pick(i.Architecture, d.Architecture)
	if i.PendingTime.IsZero() {
		i.PendingTime = d.PendingTime
	}
	return i
}

// Close stops the server.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// CAPEM returns the PEM certificate that verifies the PKCS#7 signatures,
// the stand-in for AWS's regional instance identity certificate.
func (s *Server) CAPEM() []byte { return slices.Clone(s.signer.pem) }

// Stats returns the counters so far.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// SetV1Only makes the server behave like an endpoint where tokens cannot be
// had (token PUT answers 403) but tokenless IMDSv1 GETs are answered: a
// client that falls back to IMDSv1 reads metadata, one that must not gets an
// error. Stats.V1Served counts the tokenless answers.
func (s *Server) SetV1Only(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.v1Only = on
}

// EnableTags turns on instance tags in metadata with these tags.
func (s *Server) EnableTags(tags map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tags = make(map[string]string, len(tags))
	for k, v := range tags {
		s.tags[k] = v
	}
}

// SetSpotAction posts a spot interruption notice: action is "terminate",
// "stop" or "hibernate", at is when it happens (AWS gives two minutes).
func (s *Server) SetSpotAction(action string, at time.Time) {
	b, _ := json.Marshal(map[string]string{"action": action, "time": at.UTC().Format(time.RFC3339)})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.spot = string(b)
}

// SetLifecycleState sets autoscaling/target-lifecycle-state, e.g.
// "InService" or "Terminated". Before the first call the path is 404.
func (s *Server) SetLifecycleState(state string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifecycle = state
}

// SetRole attaches an instance profile: meta-data/iam/security-credentials/
// lists role, and .../role serves these temporary credentials, as the SDK's
// ec2rolecreds provider reads them.
func (s *Server) SetRole(role, accessKeyID, secretAccessKey, sessionToken string, expires time.Time) {
	b, _ := json.Marshal(map[string]string{
		"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
		"AccessKeyId": accessKeyID, "SecretAccessKey": secretAccessKey, "Token": sessionToken,
		"Expiration": expires.UTC().Format(time.RFC3339),
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.role, s.roleCreds = role, string(b)
}

// ExpireTokens invalidates every issued token, as after their TTL.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/latest/api/token" {
		s.issueToken(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.GETs++
	tok := r.Header.Get(tokenHeader)
	switch exp, ok := s.tokens[tok]; {
	case tok == "" && s.v1Only:
		s.stats.V1Served++
	case !ok || time.Now().After(exp):
		s.stats.Unauthorized++
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	default:
		w.Header().Set(ttlHeader, strconv.Itoa(int(time.Until(exp).Seconds())))
	}
	body, ok := s.lookupLocked(r.URL.Path)
	if !ok {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		_, _ = fmt.Fprint(w, notFoundPage)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = fmt.Fprint(w, body)
}

const notFoundPage = `<?xml version="1.0" encoding="iso-8859-1"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
	"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
 <head>
  <title>404 - Not Found</title>
 </head>
 <body>
  <h1>404 - Not Found</h1>
 </body>
</html>
`

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "OPTIONS, PUT")
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return
	}
	if s.v1Only || r.Header.Get("X-Forwarded-For") != "" {
		s.stats.TokenRefused++
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(ttlHeader))
	if err != nil || ttl < 1 || ttl > maxTokenTTL {
		s.stats.TokenRefused++
		http.Error(w, "Bad Request", http.StatusBadRequest)
		return
	}
	b := make([]byte, 42)
	_, _ = rand.Read(b)
	tok := base64.StdEncoding.EncodeToString(b)
	s.tokens[tok] = time.Now().Add(time.Duration(ttl) * time.Second)
	s.stats.TokensIssued++
	w.Header().Set(ttlHeader, strconv.Itoa(ttl))
	w.Header().Set("Content-Type", "text/plain")
	_, _ = fmt.Fprint(w, tok)
}

// lookupLocked returns the body served at path.
func (s *Server) lookupLocked(path string) (string, bool) {
	i := s.inst
	switch path {
	case "/latest/dynamic/instance-identity/document":
		return s.documentLocked(), true
	case "/latest/dynamic/instance-identity/pkcs7":
		sig, err := s.signer.sign([]byte(s.documentLocked()))
		return sig, err == nil
	}
	md, ok := strings.CutPrefix(path, metaDataPrefix)
	if !ok {
		return "", false
	}
	switch md {
	case "instance-id":
		return i.InstanceID, true
	case "instance-type":
		return i.InstanceType, true
	case "ami-id":
		return i.ImageID, true
	case "local-ipv4":
		return i.PrivateIP, true
	case "placement/region":
		return i.Region, true
	case "placement/availability-zone":
		return i.AvailabilityZone, true
	case "spot/instance-action":
		return s.spot, s.spot != ""
	case "autoscaling/target-lifecycle-state":
		return s.lifecycle, s.lifecycle != ""
	case "iam/security-credentials", "iam/security-credentials/":
		return s.role, s.role != ""
	case "iam/security-credentials/" + s.role:
		return s.roleCreds, s.role != ""
	case "tags/instance", "tags/instance/":
		if s.tags == nil {
			return "", false
		}
		keys := make([]string, 0, len(s.tags))
		for k := range s.tags {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return strings.Join(keys, "\n"), true
	}
	if k, ok := strings.CutPrefix(md, "tags/instance/"); ok && s.tags != nil {
		v, found := s.tags[k]
		return v, found
	}
	return "", false
}

// documentLocked renders the identity document the way IMDS does.
func (s *Server) documentLocked() string {
	i := s.inst
	return fmt.Sprintf(`{
  "accountId" : %q,
  "architecture" : %q,
  "availabilityZone" : %q,
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : %q,
  "instanceId" : %q,
  "instanceType" : %q,
  "kernelId" : null,
  "pendingTime" : %q,
  "privateIp" : %q,
  "ramdiskId" : null,
  "region" : %q,
  "version" : "2017-09-30"
}`, i.AccountID, i.Architecture, i.AvailabilityZone, i.ImageID, i.InstanceID, i.InstanceType,
		i.PendingTime.UTC().Format(time.RFC3339), i.PrivateIP, i.Region)
}
