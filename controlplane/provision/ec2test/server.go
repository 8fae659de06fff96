// Package ec2test is an Amazon EC2 double that speaks the real wire
// protocol: the EC2 Query API (form-encoded POST, Action=..., XML answers in
// the 2016-11-15 namespace) with SigV4 checked on every request. Tests drive
// it with the real aws-sdk-go-v2 ec2 client through BaseEndpoint and the
// static credentials it hands out.
//
// It serves RunInstances, TerminateInstances, DescribeInstances and
// GetConsoleOutput, records every launch with its parameters, honours
// ClientToken idempotency as EC2 does (the same token and parameters give
// back the first reservation, even once terminated; the same token with
// other parameters is IdempotentParameterMismatch), and injects
// UnauthorizedOperation, RequestLimitExceeded and 5xx answers per action.
package ec2test

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"sort"
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
	// Account is the owner ID of reservations and the account in ARNs.
	Account = "123456789012"
	// AccessKeyID is the access key the server knows.
	AccessKeyID = "AKIDEC2TESTEXAMPLE"
	// SecretAccessKey is the secret key paired with AccessKeyID.
	SecretAccessKey = "ec2test/secret/key/EXAMPLEKEY0123456789"
	// RoleName is the role named in UnauthorizedOperation messages.
	RoleName = "molecule-controlplane"
)

// Instance states, as EC2 names them.
const (
	Pending      = "pending"
	Running      = "running"
	ShuttingDown = "shutting-down"
	Terminated   = "terminated"
	Stopping     = "stopping"
	Stopped      = "stopped"
)

var stateCodes = map[string]int{Pending: 0, Running: 16, ShuttingDown: 32, Terminated: 48, Stopping: 64, Stopped: 80}

// Fault is an error answer injected for an action.
type Fault int

// Faults.
const (
	// Unauthorized answers 403 UnauthorizedOperation naming the ec2: action.
	Unauthorized Fault = iota + 1
	// Throttled answers 503 RequestLimitExceeded.
	Throttled
	// ServerError answers 500 InternalError.
	ServerError
	// Unavailable answers 503 Unavailable.
	Unavailable
	// LostAnswer carries the action out, then answers 500 InternalError, as
	// when EC2 launched but the answer never reached the caller.
	LostAnswer
)

// Launch is what one RunInstances asked for, decoded from the wire.
type Launch struct {
	ImageID      string
	InstanceType string
	MinCount     int
	MaxCount     int
	ClientToken  string
	// SubnetID is the instance-level SubnetId, or that of network interface 1.
	SubnetID string
	// SecurityGroups are the group IDs at instance level or on interface 1.
	SecurityGroups []string
	// NetworkInterface reports whether the launch gave network interface 1.
	NetworkInterface bool
	// AssociatePublicIP is interface 1's AssociatePublicIpAddress; nil when unset.
	AssociatePublicIP *bool
	// HTTPTokens, HTTPEndpoint and MetadataTags are the MetadataOptions as
	// sent ("" when absent); HopLimit is 0 when absent.
	HTTPTokens   string
	HTTPEndpoint string
	MetadataTags string
	HopLimit     int
	// InstanceProfileName and InstanceProfileARN are IamInstanceProfile's.
	InstanceProfileName string
	InstanceProfileARN  string
	// UserData is the decoded user-data.
	UserData string
	// Tags are the tags of the "instance" tag specification.
	Tags map[string]string
	// TagResourceTypes are the resource types of every tag specification.
	TagResourceTypes []string
}

// Instance is an instance the server knows.
type Instance struct {
	ID            string
	ReservationID string
	State         string
	PrivateIP     string
	LaunchTime    time.Time
	Launch        Launch
	Console       string
}

// Request records one request the server received, for assertions.
type Request struct {
	// Action is the form's Action, e.g. RunInstances.
	Action string
	// ClientToken is RunInstances' ClientToken.
	ClientToken string
	// InstanceIDs are the InstanceId.N of the request.
	InstanceIDs []string
	// Status is the HTTP status answered.
	Status int
	// ErrorCode is the error code answered, empty on success.
	ErrorCode string
}

type reservation struct {
	id        string
	instances []string
	launch    Launch
}

// Server is a running fake EC2 endpoint. Its methods are safe for concurrent use.
type Server struct {
	// URL is the endpoint to give the client as BaseEndpoint.
	URL string

	srv *httptest.Server

	mu        sync.Mutex
	instances map[string]*Instance
	tokens    map[string]*reservation
	keys      map[string]string
	faults    map[string][]Fault
	requests  []Request
	nextIP    int
	now       func() time.Time
}

// New starts a server and stops it when tb's test ends.
func New(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{
		instances: map[string]*Instance{},
		tokens:    map[string]*reservation{},
		keys:      map[string]string{AccessKeyID: SecretAccessKey},
		faults:    map[string][]Fault{},
		nextIP:    10,
		now:       time.Now,
	}
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

// Fail makes the next calls of action answer with the faults, in order
// (action "" matches every action).
func (s *Server) Fail(action string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[action] = append(s.faults[action], faults...)
}

// Instances returns a copy of every instance ever launched, terminated ones
// included, in launch order.
func (s *Server) Instances() []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Instance, 0, len(s.instances))
	for _, in := range s.instances {
		out = append(out, *in)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LaunchTime.Equal(out[j].LaunchTime) {
			return out[i].LaunchTime.Before(out[j].LaunchTime)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Live returns the instances not terminated (nor shutting down).
func (s *Server) Live() []Instance {
	var out []Instance
	for _, in := range s.Instances() {
		if in.State != Terminated && in.State != ShuttingDown {
			out = append(out, in)
		}
	}
	return out
}

// SetState forces an instance's state; it reports false for an unknown ID.
func (s *Server) SetState(id, state string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if ok {
		in.State = state
	}
	return ok
}

// SetConsole sets what GetConsoleOutput answers for an instance.
func (s *Server) SetConsole(id, output string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if ok {
		in.Console = output
	}
	return ok
}

// Requests returns a copy of every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Count returns how many requests for action ("" for any) answered with
// the error code (or succeeded, for code "").
func (s *Server) Count(action, code string) int {
	n := 0
	for _, r := range s.Requests() {
		if (action == "" || r.Action == action) && r.ErrorCode == code {
			n++
		}
	}
	return n
}

// takeFaultLocked pops the next fault for action, if any.
func (s *Server) takeFaultLocked(action string) Fault {
	for _, key := range []string{action, ""} {
		if q := s.faults[key]; len(q) > 0 {
			s.faults[key] = q[1:]
			return q[0]
		}
	}
	return 0
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}
