//go:build unix

package container

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
)

// resolvePorts fills the host address of every port bound to a variable
// (${PRIVATE_IP}) from Options.HostAddr, so a port is published on that
// address and loopback rather than on every address. It runs at each
// start (d.op held); the resolved address is part of the spec hash, so a
// changed address recreates the container.
func (d *Driver) resolvePorts(ctx context.Context) error {
	ports := slices.Clone(d.spec.Ports)
	for i, p := range ports {
		if p.HostIPFrom == "" {
			continue
		}
		if d.opts.HostAddr == nil {
			return fmt.Errorf("unit %s: ports[%d] binds ${%s}, which this agent cannot resolve", d.spec.Unit, i, p.HostIPFrom)
		}
		v, err := d.opts.HostAddr(ctx, p.HostIPFrom)
		if err != nil {
			return fmt.Errorf("unit %s: ports[%d] ${%s}: %w", d.spec.Unit, i, p.HostIPFrom, err)
		}
		ip, err := netip.ParseAddr(v)
		if err != nil || ip.IsUnspecified() || ip.Zone() != "" {
			return fmt.Errorf("unit %s: ports[%d] ${%s} resolved to %q, not a unicast address", d.spec.Unit, i, p.HostIPFrom, v)
		}
		ports[i].HostIP = ip.String()
	}
	d.spec.Ports = ports
	return nil
}
