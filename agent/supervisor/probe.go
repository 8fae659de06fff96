//go:build unix

package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTPProbe is ready when GET URL answers Status (any 2xx when Status is 0).
type HTTPProbe struct {
	URL    string
	Status int
	Client *http.Client
}

// Ready implements Prober.
func (p *HTTPProbe) Ready(ctx context.Context) (bool, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return false, "", err
	}
	c := p.Client
	if c == nil {
		c = probeClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return false, "no answer", err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	ok := resp.StatusCode == p.Status || (p.Status == 0 && resp.StatusCode/100 == 2)
	return ok, fmt.Sprintf("HTTP %d", resp.StatusCode), nil
}

// probeClient never follows redirects off the host and keeps no idle
// connections, so probing costs nothing between polls.
var probeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// TCPProbe is ready when Addr accepts a connection.
type TCPProbe struct{ Addr string }

// Ready implements Prober.
func (p *TCPProbe) Ready(ctx context.Context) (bool, string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", p.Addr)
	if err != nil {
		return false, "connection refused", err
	}
	c.Close()
	return true, "accepting", nil
}

// probeOnce runs p with a timeout.
func probeOnce(ctx context.Context, p Prober, timeout time.Duration) (bool, string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p.Ready(ctx)
}
