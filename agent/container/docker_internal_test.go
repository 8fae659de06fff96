//go:build unix

package container

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestNewClientReadsDockerHost(t *testing.T) {
	for _, tt := range []struct {
		host, tls string
		wantHost  string
		wantErr   string
	}{
		{host: "", wantHost: "docker"},
		{host: "unix:///run/docker.sock", wantHost: "docker"},
		{host: "tcp://127.0.0.1:2375", wantHost: "127.0.0.1:2375"},
		{host: "unix://", wantErr: "names no socket path"},
		{host: "tcp://", wantErr: "names no host:port"},
		{host: "ssh://me@host", wantErr: `scheme "ssh" is not supported`},
		{host: "unix:///run/docker.sock", tls: "1", wantErr: "TLS to the engine"},
	} {
		t.Run(tt.host+tt.tls, func(t *testing.T) {
			t.Setenv("DOCKER_HOST", tt.host)
			t.Setenv("DOCKER_TLS_VERIFY", tt.tls)
			t.Setenv("DOCKER_CERT_PATH", "")
			c, err := NewClient()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewClient() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c.host != tt.wantHost {
				t.Fatalf("NewClient() = %+v, %v; want host %q", c, err, tt.wantHost)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"1.41", "1.44", true},
		{"1.44", "1.41", false},
		{"1.44", "1.44", false},
		{"1.9", "1.10", true},
		{"1.52", "2.0", true},
	} {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%s, %s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestEngineErrorClasses(t *testing.T) {
	nf := fmt.Errorf("inspect: %w", &engineError{status: 404, msg: "No such container: x"})
	conflict := &engineError{status: 409, msg: "name in use"}
	if !IsNotFound(nf) || IsConflict(nf) {
		t.Errorf("404 wrapped: IsNotFound %v IsConflict %v, want true false", IsNotFound(nf), IsConflict(nf))
	}
	if !IsConflict(conflict) || IsNotFound(conflict) {
		t.Errorf("409: IsConflict %v IsNotFound %v, want true false", IsConflict(conflict), IsNotFound(conflict))
	}
	if IsNotFound(errors.New("dial unix: no such file")) {
		t.Error("a transport error counts as not found")
	}
	if got := nf.Error(); !strings.Contains(got, "No such container: x (HTTP 404)") {
		t.Errorf("error text %q does not carry the engine's message and status", got)
	}
}
