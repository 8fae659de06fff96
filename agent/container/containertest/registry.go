//go:build unix

package containertest

import (
	"crypto/subtle"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Registry is an in-process OCI registry on 127.0.0.1, optionally behind
// HTTP basic auth, closed when the test ends.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string
	srv  *httptest.Server
	user string
	pass string

	mu    sync.Mutex
	holds []*hold
}

type hold struct {
	substr  string
	reached chan struct{}
	once    sync.Once
	release chan struct{}
}

// RegistryOption configures NewRegistry.
type RegistryOption func(*Registry)

// WithBasicAuth makes the registry demand user/pass on every request, like a
// private registry (GHCR) does.
func WithBasicAuth(user, pass string) RegistryOption {
	return func(r *Registry) { r.user, r.pass = user, pass }
}

// NewRegistry starts a registry on 127.0.0.1:0 and closes it at cleanup.
func NewRegistry(t testing.TB, opts ...RegistryOption) *Registry {
	t.Helper()
	r := &Registry{}
	for _, o := range opts {
		o(r)
	}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if r.user != "" {
		h = r.basicAuth(h)
	}
	h = r.holding(h)
	r.srv = httptest.NewServer(h) // listens on 127.0.0.1:0
	t.Cleanup(r.srv.Close)
	r.Host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *Registry) basicAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u, p, ok := req.BasicAuth()
		if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(r.user)) != 1 ||
			subtle.ConstantTimeCompare([]byte(p), []byte(r.pass)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="containertest"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, req)
	})
}

// Hold makes requests whose path contains substr wait until release is
// called (or the test ends); reached is closed when the first one arrives.
// It lets a test act while a client is in the middle of a pull.
func (r *Registry) Hold(t testing.TB, substr string) (reached <-chan struct{}, release func()) {
	h := &hold{substr: substr, reached: make(chan struct{}), release: make(chan struct{})}
	var once sync.Once
	rel := func() { once.Do(func() { close(h.release) }) }
	t.Cleanup(rel)
	r.mu.Lock()
	r.holds = append(r.holds, h)
	r.mu.Unlock()
	return h.reached, rel
}

func (r *Registry) holding(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		holds := append([]*hold(nil), r.holds...)
		r.mu.Unlock()
		for _, h := range holds {
			if strings.Contains(req.URL.Path, h.substr) {
				h.once.Do(func() { close(h.reached) })
				select {
				case <-h.release:
				case <-req.Context().Done():
					return
				}
			}
		}
		next.ServeHTTP(w, req)
	})
}

// Push uploads img as HOST/repo:tag and returns the digest-pinned reference
// "127.0.0.1:PORT/repo@sha256:…".
func (r *Registry) Push(t testing.TB, repo, tag string, img v1.Image) string {
	t.Helper()
	ref, err := name.NewTag(r.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatalf("parse tag: %v", err)
	}
	auth := authn.Anonymous
	if r.user != "" {
		auth = &authn.Basic{Username: r.user, Password: r.pass}
	}
	if err := remote.Write(ref, img, remote.WithAuth(auth)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest: %v", err)
	}
	return r.Host + "/" + repo + "@" + d.String()
}

// Apps are the digest-pinned references of the three test app variants.
type Apps struct {
	V1, V2 string // healthy, reporting "v1" and "v2"
	V3     string // never ready, reporting "v3"
	// Tag is a tag reference (":v2") to check that tags are refused.
	Tag string
}

// PushApps pushes v1, v2 (healthy) and v3 (never ready) to repo "test/app".
func (r *Registry) PushApps(t testing.TB) Apps {
	t.Helper()
	return Apps{
		V1:  r.Push(t, "test/app", "v1", AppImage(t, Variant{Version: "v1"})),
		V2:  r.Push(t, "test/app", "v2", AppImage(t, Variant{Version: "v2"})),
		V3:  r.Push(t, "test/app", "v3", AppImage(t, Variant{Version: "v3", NeverReady: true})),
		Tag: r.Host + "/test/app:v2",
	}
}
