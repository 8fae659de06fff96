// Package dashboard is the control plane's operator page: hosts (role, org,
// status, last seen, tunnel readiness, units and digests, agent version),
// rollouts with their wave progress and recent events, filtered by org and
// status, rendered on the server with html/template and refreshed by a meta
// refresh. It sits behind the admin token: a login form opens a session
// held in memory (only its hash), carried by an HttpOnly, SameSite=Strict
// cookie. It never renders a secret: its data carry none.
package dashboard

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Path is where the dashboard is mounted.
const Path = "/dashboard"

// CookieName is the session cookie.
const CookieName = "molecule_session"

// Source is the control plane's state as the dashboard shows it.
type Source interface {
	Hosts(ctx context.Context) ([]api.Host, error)
	Rollouts(ctx context.Context) ([]rollout.Rollout, error)
	// Events returns the most recent events, newest first.
	Events(ctx context.Context, limit int) ([]events.Event, error)
}

// Options configure a Dashboard. Source and AdminToken are required.
type Options struct {
	Source     Source
	AdminToken secret.Secret
	Logger     *slog.Logger
	Now        func() time.Time
	// SessionTTL is how long a login lasts (default 12h).
	SessionTTL time.Duration
	// Refresh is the page's auto-refresh period (default 10s).
	Refresh time.Duration
	// SecureCookie adds Secure to the cookie (serve behind TLS).
	SecureCookie bool
	// Throttle keeps the failed-login buckets; the control plane passes its
	// store, so every replica sees the same ones. Default: in this process.
	Throttle Throttle
	// PerAddress and PerAccount size the failed-login buckets of one
	// source address (default 10, refilled one a minute) and of the admin
	// account from everywhere (default 1,000, refilled 100 a minute: an
	// attacker needs over a hundred addresses to lock the operator out).
	PerAddress, PerAccount store.Bucket
}

// Dashboard serves the page, the login and the logout.
type Dashboard struct {
	o      Options
	admin  [32]byte
	csrf   []byte // key for per-session CSRF tokens
	tmpl   *template.Template
	mu     sync.Mutex
	sess   map[[32]byte]time.Time // hash of session ID -> expiry
	maxSes int
}

//go:embed templates/*.html
var templates embed.FS

// New returns a Dashboard.
func New(o Options) *Dashboard {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SessionTTL <= 0 {
		o.SessionTTL = 12 * time.Hour
	}
	if o.Refresh <= 0 {
		o.Refresh = 10 * time.Second
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	d := &Dashboard{
		o: o, admin: sha256.Sum256([]byte(o.AdminToken.Reveal())), csrf: key,
		tmpl: template.Must(template.New("").Funcs(funcs).ParseFS(templates, "templates/*.html")),
		sess: map[[32]byte]time.Time{}, maxSes: 1000,
	}
	d.initThrottle()
	return d
}

// ServeHTTP routes /dashboard, /dashboard/login and /dashboard/logout.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	switch {
	case r.URL.Path == Path && r.Method == http.MethodGet, r.URL.Path == Path+"/" && r.Method == http.MethodGet:
		d.page(w, r)
	case r.URL.Path == Path+"/login" && r.Method == http.MethodPost:
		d.login(w, r)
	case r.URL.Path == Path+"/logout" && r.Method == http.MethodPost:
		d.logout(w, r)
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

func hash(id string) [32]byte { return sha256.Sum256([]byte(id)) }

// session returns the request's session ID when it is valid.
func (d *Dashboard) session(r *http.Request) (string, bool) {
	c, err := r.Cookie(CookieName)
	if err != nil || len(c.Value) != 64 {
		return "", false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	exp, ok := d.sess[hash(c.Value)]
	if !ok || !d.o.Now().Before(exp) {
		delete(d.sess, hash(c.Value))
		return "", false
	}
	return c.Value, true
}

func (d *Dashboard) csrfToken(sessionID string) string {
	m := hmac.New(sha256.New, d.csrf)
	m.Write([]byte(sessionID))
	return hex.EncodeToString(m.Sum(nil))
}

// sameOrigin refuses a cross-site POST: when the browser names an Origin,
// it must be this host. (SameSite=Strict already keeps the cookie off
// cross-site requests.)
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return r.Header.Get("Sec-Fetch-Site") == "" || r.Header.Get("Sec-Fetch-Site") == "same-origin" || r.Header.Get("Sec-Fetch-Site") == "none"
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if !sameOrigin(r) {
		http.Error(w, "cross-site login refused", http.StatusForbidden)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	now := d.o.Now()
	buckets := d.buckets(r)
	wait, err := d.o.Throttle.Throttled(r.Context(), buckets, now)
	if err != nil {
		d.o.Logger.Error("read login throttle", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		d.render(w, "login.html", map[string]any{"Error": "Sign-in is unavailable while storage fails; try again shortly."})
		return
	}
	if wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		w.WriteHeader(http.StatusTooManyRequests)
		d.render(w, "login.html", map[string]any{"Error": "Too many failed sign-ins; try again in a minute."})
		return
	}
	got := sha256.Sum256([]byte(r.PostForm.Get("token")))
	if subtle.ConstantTimeCompare(got[:], d.admin[:]) != 1 {
		if err := d.o.Throttle.Charge(r.Context(), buckets, now); err != nil {
			d.o.Logger.Error("charge login throttle", "err", err)
		}
		d.o.Logger.Warn("dashboard login refused", "remote", r.RemoteAddr)
		w.WriteHeader(http.StatusUnauthorized)
		d.render(w, "login.html", map[string]any{"Error": "That is not the admin token."})
		return
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	d.mu.Lock()
	for k, exp := range d.sess {
		if !now.Before(exp) || len(d.sess) >= d.maxSes {
			delete(d.sess, k)
		}
	}
	d.sess[hash(id)] = now.Add(d.o.SessionTTL)
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: id, Path: Path, HttpOnly: true, Secure: d.o.SecureCookie,
		SameSite: http.SameSiteStrictMode, MaxAge: int(d.o.SessionTTL.Seconds())})
	d.o.Logger.Info("dashboard login", "remote", r.RemoteAddr)
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	id, ok := d.session(r)
	if !ok || !sameOrigin(r) || r.ParseForm() != nil ||
		!hmac.Equal([]byte(r.PostForm.Get("csrf")), []byte(d.csrfToken(id))) {
		http.Error(w, "logout refused: reload the page and try again", http.StatusForbidden)
		return
	}
	d.mu.Lock()
	delete(d.sess, hash(id))
	d.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: Path, HttpOnly: true, Secure: d.o.SecureCookie,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	http.Redirect(w, r, Path, http.StatusSeeOther)
}

func (d *Dashboard) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := d.tmpl.ExecuteTemplate(w, name, data); err != nil {
		d.o.Logger.Error("render dashboard", "template", name, "err", err)
	}
}
