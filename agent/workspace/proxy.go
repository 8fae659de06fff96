//go:build unix

package workspace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"sync"
	"time"
)

// OrgHeader is the tenant's TenantGuard header.
const OrgHeader = "X-Molecule-Org-Id"

// NewProxyHandler returns a reverse proxy to the tenant at target that sets
// X-Molecule-Org-Id to org on every request, replacing whatever the client
// sent, and leaves every other header (Authorization, X-Workspace-ID) and
// the bodies untouched. Hop-by-hop headers are handled as any proxy must.
// Errors are logged with method and path only: never headers or queries.
func NewProxyHandler(target, org string, log *slog.Logger) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("proxy target %q: want the tenant's http(s)://host[:port]", target)
	}
	if org == "" {
		return nil, errors.New("proxy org id: required (the proxy exists to add " + OrgHeader + ")")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Header.Del(OrgHeader)
			r.Out.Header.Set(OrgHeader, org)
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			log.Warn("org proxy: tenant request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			w.WriteHeader(http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}, nil
}

// Proxy is the org-header proxy served on a loopback address.
type Proxy struct {
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup
}

// ListenProxy serves NewProxyHandler on addr, which must be a loopback
// address ("127.0.0.1:0" picks a port). Point the runtime's PLATFORM_URL at
// Proxy.URL.
func ListenProxy(addr, target, org string, log *slog.Logger) (*Proxy, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("proxy listen address %q: want a loopback address and port such as 127.0.0.1:8081", addr)
	}
	h, err := NewProxyHandler(target, org, log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("org proxy: %w", err)
	}
	p := &Proxy{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = p.srv.Serve(ln)
	}()
	return p, nil
}

// URL is the proxy's base URL, e.g. http://127.0.0.1:8081.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// Close stops the proxy: in-flight requests get up to 5 seconds.
func (p *Proxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if err != nil {
		_ = p.srv.Close()
	}
	p.wg.Wait()
	return err
}
