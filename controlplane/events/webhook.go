package events

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// SignatureHeader carries "t=<unix seconds>,v1=<hex HMAC-SHA256 of
// "<t>.<body>" keyed with the hook's secret>".
const SignatureHeader = "X-Molecule-Signature"

// Hook is one webhook: where events of some kinds are POSTed, and the
// secret their signature is keyed with.
type Hook struct {
	// Name identifies the hook in delivery records and logs.
	Name string
	URL  string
	// Kinds are the event kinds delivered; empty or "*" means all.
	Kinds  []string
	Secret secret.Secret
}

func (h Hook) wants(kind string) bool {
	return len(h.Kinds) == 0 || slices.Contains(h.Kinds, "*") || slices.Contains(h.Kinds, kind)
}

// fileConfig is the JSON of a webhooks file.
type fileConfig struct {
	Hooks []struct {
		Name       string   `json:"name"`
		URL        string   `json:"url"`
		Kinds      []string `json:"kinds"`
		SecretFile string   `json:"secret_file"`
	} `json:"hooks"`
}

var hookNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// LoadHooks reads a webhooks file:
//
//	{"hooks": [{"name": "provisioner", "url": "https://prov.example/hooks/fleet",
//	            "kinds": ["removed", "rollout_halted"], "secret_file": "/etc/molecule-controlplane/prov.secret"}]}
//
// "deprovisioned" is accepted for "removed".
// Each secret is read from its own file so it never sits in the config.
func LoadHooks(path string) ([]Hook, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("webhooks file: %w", err)
	}
	return ParseHooks(b, os.ReadFile)
}

// ParseHooks parses the content of a webhooks file (see LoadHooks);
// readFile reads the secret files.
func ParseHooks(b []byte, readFile func(string) ([]byte, error)) ([]Hook, error) {
	var fc fileConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("webhooks file: not the expected JSON: %w", err)
	}
	var out []Hook
	names := map[string]bool{}
	for i, h := range fc.Hooks {
		field := fmt.Sprintf("hooks[%d]", i)
		if !hookNameRE.MatchString(h.Name) || names[h.Name] {
			return nil, fmt.Errorf("%s.name: want a unique 1-64 of [A-Za-z0-9._-]", field)
		}
		names[h.Name] = true
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("%s.url: want an http(s) URL", field)
		}
		for j, k := range h.Kinds {
			if k == "deprovisioned" { // the name operators use for "removed"
				h.Kinds[j], k = KindDeprovisioned, KindDeprovisioned
			}
			if k != "*" && !slices.Contains(Kinds, k) {
				return nil, fmt.Errorf("%s.kinds[%d]: unknown kind %q: want one of %s or *", field, j, k, strings.Join(Kinds, ", "))
			}
		}
		if h.SecretFile == "" {
			return nil, fmt.Errorf("%s.secret_file: required", field)
		}
		sb, err := readFile(h.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("%s.secret_file: %w", field, err)
		}
		sec := strings.TrimSpace(string(sb))
		if len(sec) < 16 {
			return nil, fmt.Errorf("%s.secret_file %s: the secret must be at least 16 characters", field, h.SecretFile)
		}
		out = append(out, Hook{Name: h.Name, URL: h.URL, Kinds: h.Kinds, Secret: secret.New(sec)})
	}
	return out, nil
}

// Sign returns the signature header value for body at t.
func Sign(sec secret.Secret, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(sec, ts, body)
}

func mac(sec secret.Secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(sec.Reveal()))
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is returned by Verify.
var ErrBadSignature = errors.New("webhook signature invalid")

// Verify checks a signature header against body, refusing timestamps more
// than tolerance away from now (replays).
func Verify(sec secret.Secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec64, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: want t=<unix>,v1=<hex>", ErrBadSignature)
	}
	if d := now.Sub(time.Unix(sec64, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: timestamp %s outside %s of now", ErrBadSignature, ts, tolerance)
	}
	if !hmac.Equal([]byte(sig), []byte(mac(sec, ts, body))) {
		return fmt.Errorf("%w: HMAC mismatch", ErrBadSignature)
	}
	return nil
}

// Feed is what the dispatcher needs from the store.
type Feed interface {
	EventsSince(ctx context.Context, since int64, limit int) ([]store.Event, error)
	RecordDelivery(ctx context.Context, d store.Delivery) error
	WebhookCursor(ctx context.Context, hook string) (int64, error)
	SetWebhookCursor(ctx context.Context, hook string, eventID int64) error
}

// Dispatcher delivers stored events to webhooks, in order, each hook from
// its own persisted cursor, so a restart resumes where it stopped.
type Dispatcher struct {
	Feed  Feed
	Hooks []Hook
	// Client posts deliveries (default: 10s timeout).
	Client *http.Client
	Logger *slog.Logger
	// Poll is how often the feed is read when idle (default 1s).
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait between attempts
	// (defaults 1s and 5m); MaxAttempts gives up on an event (default 10).
	MinBackoff, MaxBackoff time.Duration
	MaxAttempts            int
	Now                    func() time.Time
}

func (d *Dispatcher) defaults() {
	if d.Client == nil {
		d.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Poll <= 0 {
		d.Poll = time.Second
	}
	if d.MinBackoff <= 0 {
		d.MinBackoff = time.Second
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = 5 * time.Minute
	}
	if d.MaxAttempts <= 0 {
		d.MaxAttempts = 10
	}
	if d.Now == nil {
		d.Now = time.Now
	}
}

// Run delivers until ctx ends; each hook runs in its own goroutine, all
// waited for.
func (d *Dispatcher) Run(ctx context.Context) {
	d.defaults()
	var wg sync.WaitGroup
	for _, h := range d.Hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.runHook(ctx, h)
		}()
	}
	wg.Wait()
}

func (d *Dispatcher) runHook(ctx context.Context, h Hook) {
	log := d.Logger.With("hook", h.Name)
	for ctx.Err() == nil {
		cur, err := d.Feed.WebhookCursor(ctx, h.Name)
		var evs []store.Event
		if err == nil {
			evs, err = d.Feed.EventsSince(ctx, cur, 100)
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("read events for webhook failed; retrying", "err", err)
			}
			backoff.Wait(ctx, d.Poll)
			continue
		}
		if len(evs) == 0 {
			backoff.Wait(ctx, d.Poll)
			continue
		}
		for _, e := range evs {
			if h.wants(e.Type) && !d.deliver(ctx, log, h, FromStore(e)) {
				return // ctx ended mid-delivery; the cursor stays before e
			}
			if err := d.Feed.SetWebhookCursor(ctx, h.Name, e.ID); err != nil {
				if ctx.Err() == nil {
					log.Warn("save webhook cursor failed; the event may be delivered again", "event", e.ID, "err", err)
				}
				break
			}
		}
	}
}

// deliver posts e until a 2xx or MaxAttempts, recording every attempt. It
// returns false only when ctx ended.
func (d *Dispatcher) deliver(ctx context.Context, log *slog.Logger, h Hook, e Event) bool {
	body, _ := json.Marshal(e)
	for attempt := 1; ; attempt++ {
		code, derr := d.post(ctx, h, e, body, attempt)
		if ctx.Err() != nil {
			return false
		}
		rec := store.Delivery{Hook: h.Name, EventID: e.ID, Attempt: attempt, StatusCode: code, At: d.Now().UTC()}
		if derr != nil {
			rec.Error = derr.Error()
		}
		if err := d.Feed.RecordDelivery(ctx, rec); err != nil && ctx.Err() == nil {
			log.Warn("record webhook delivery failed", "event", e.ID, "err", err)
		}
		if derr == nil {
			log.Debug("webhook delivered", "event", e.ID, "kind", e.Kind, "attempt", attempt)
			return true
		}
		if attempt >= d.MaxAttempts {
			log.Error("webhook delivery given up", "event", e.ID, "kind", e.Kind, "attempts", attempt, "err", derr)
			return true
		}
		delay := backoff.Policy{Min: d.MinBackoff, Max: d.MaxBackoff}.Delay(attempt, 0)
		log.Warn("webhook delivery failed; retrying", "event", e.ID, "attempt", attempt, "in", delay, "err", derr)
		if !backoff.Wait(ctx, delay) {
			return false
		}
	}
}

func (d *Dispatcher) post(ctx context.Context, h Hook, e Event, body []byte, attempt int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Molecule-Event", e.Kind)
	req.Header.Set("X-Molecule-Delivery", fmt.Sprintf("%s-%d-%d", h.Name, e.ID, attempt))
	req.Header.Set(SignatureHeader, Sign(h.Secret, d.Now(), body))
	resp, err := d.Client.Do(req)
	if err != nil {
		// The URL is configuration, not a secret; the error names it.
		return 0, fmt.Errorf("post: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("receiver answered %d", resp.StatusCode)
	}
	return resp.StatusCode, nil
}
