//go:build unix

package workspace_test

import (
	"net"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

func TestPickHostIP(t *testing.T) {
	addr := func(s string) net.Addr {
		ip, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		n.IP = ip
		return n
	}
	tests := []struct {
		name    string
		addrs   []string
		want    string
		wantErr string
	}{
		{"private after loopback", []string{"127.0.0.1/8", "10.0.3.7/24"}, "10.0.3.7", ""},
		{"172.16/12", []string{"172.20.1.2/16"}, "172.20.1.2", ""},
		{"TEST-NET only (a dev box)", []string{"127.0.0.1/8", "192.0.2.2/24"}, "", "192.0.2.2"},
		{"public only", []string{"8.8.4.4/24"}, "", "workspace.host_ip"},
		{"none", nil, "", "workspace.host_ip"},
		{"ipv6 ignored", []string{"fd00::1/64", "192.168.1.9/24"}, "192.168.1.9", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var as []net.Addr
			for _, a := range tc.addrs {
				as = append(as, addr(a))
			}
			got, err := workspace.PickHostIP(as)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "workspace.host_ip") {
					t.Fatalf("got %q, %v; want an error naming %s and workspace.host_ip", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// TestProbeFollowsPort: the role's agent-card probe on :8000 follows
// workspace.port; other probes are left alone.
func TestProbeFollowsPort(t *testing.T) {
	tests := []struct {
		name, url string
		port      int
		want      string
	}{
		{"role default moved", "http://127.0.0.1:8000/.well-known/agent-card.json", 9123, "http://127.0.0.1:9123/.well-known/agent-card.json"},
		{"same port", "http://127.0.0.1:8000/.well-known/agent-card.json", 8000, "http://127.0.0.1:8000/.well-known/agent-card.json"},
		{"port unset", "http://127.0.0.1:8000/.well-known/agent-card.json", 0, "http://127.0.0.1:8000/.well-known/agent-card.json"},
		{"another check kept", "http://127.0.0.1:8642/health", 9123, "http://127.0.0.1:8642/health"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := supervisor.Spec{Name: "runtime", Prober: &supervisor.HTTPProbe{URL: tc.url, Status: 200}}
			o := workspace.RuntimeOptions{Config: workspace.RuntimeConfig{Name: "n", Runtime: "r", Port: tc.port}}
			if err := workspace.Hook(o, nil)(&sp, nil, config.Unit{Name: "runtime"}); err != nil {
				t.Fatal(err)
			}
			hp, ok := sp.Prober.(*supervisor.HTTPProbe)
			if !ok {
				t.Fatalf("prober %T, want the HTTP probe", sp.Prober)
			}
			if got := hp.URL; got != tc.want {
				t.Errorf("probe URL: got %s, want %s", got, tc.want)
			}
		})
	}
}
