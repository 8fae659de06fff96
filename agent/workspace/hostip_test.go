package workspace_test

import (
	"net"
	"strings"
	"testing"

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
