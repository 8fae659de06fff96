//go:build unix

package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// privateAddr is a non-loopback IPv4 address of this machine, standing in
// for the instance's private address.
func privateAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address on this machine")
	return ""
}

// TestPortOnLoopbackAndPrivateAddressOnly: a port bound to 127.0.0.1 and
// ${PRIVATE_IP} is published on exactly those two addresses (never on
// every address), the variable resolved at start, and serves on both.
func TestPortOnLoopbackAndPrivateAddressOnly(t *testing.T) {
	r := newRig(t)
	priv := privateAddr(t)
	s := r.spec(r.apps.V1)
	s.Ports = []config.PortBinding{
		{HostIP: "127.0.0.1", HostPort: uint16(r.port), ContainerPort: 8080, Proto: "tcp"},
		{HostIPFrom: config.HostPrivateIP, HostPort: uint16(r.port), ContainerPort: 8080, Proto: "tcp"},
	}
	var asked []string
	o := r.options()
	o.HostAddr = func(_ context.Context, name string) (string, error) {
		asked = append(asked, name)
		return priv, nil
	}
	d, err := New(o, s)
	if err != nil {
		t.Fatal(err)
	}
	in := r.start(d, nil)
	if len(asked) != 1 || asked[0] != config.HostPrivateIP {
		t.Errorf("resolver asked %v, want [%s] once", asked, config.HostPrivateIP)
	}
	c, err := r.cli.ContainerInspect(context.Background(), in.ContainerID())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for port, bs := range c.HostConfig.PortBindings {
		for _, b := range bs {
			got = append(got, b.HostIP+":"+b.HostPort+"->"+string(port))
			if b.HostIP == "" || b.HostIP == "0.0.0.0" || b.HostIP == "::" {
				t.Errorf("port %s published on every address", port)
			}
		}
	}
	want := []string{"127.0.0.1:" + strconv.Itoa(r.port) + "->8080/tcp", priv + ":" + strconv.Itoa(r.port) + "->8080/tcp"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("port bindings %v, want %v", got, want)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, host := range []string{"127.0.0.1", priv} {
		url := fmt.Sprintf("http://%s:%d/health", host, r.port)
		deadline := time.Now().Add(testenv.Long)
		for {
			resp, err := hc.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET %s: %v", url, err)
			}
			time.Sleep(50 * time.Millisecond) // polling a real server
		}
	}
}

// TestUnresolvablePortRefused: a ${PRIVATE_IP} port the agent cannot
// resolve, or that resolves to every address, fails the start with an
// error naming the port; nothing is created.
func TestUnresolvablePortRefused(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	cli, err := NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s := testSpec("ports-test", 8080, "example/app:1")
	s.Ports = append(s.Ports, config.PortBinding{HostIPFrom: config.HostPrivateIP, HostPort: 8080, ContainerPort: 8080, Proto: "tcp"})
	tests := []struct {
		name    string
		resolve func(context.Context, string) (string, error)
		want    string
	}{
		{"no resolver", nil, "unit app: ports[1] binds ${PRIVATE_IP}, which this agent cannot resolve"},
		{"imds down", func(context.Context, string) (string, error) { return "", errors.New("imds unreachable") }, "unit app: ports[1] ${PRIVATE_IP}: imds unreachable"},
		{"every address", func(context.Context, string) (string, error) { return "0.0.0.0", nil }, `resolved to "0.0.0.0", not a unicast address`},
		{"not an address", func(context.Context, string) (string, error) { return "ip-10-0-1-23", nil }, "not a unicast address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testOptions(cli, "ports-test", t.TempDir())
			o.HostAddr = tt.resolve
			d, err := New(o, s)
			if err != nil {
				t.Fatal(err)
			}
			_, err = d.Start(context.Background(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
