//go:build unix

// Package tunnel runs cloudflared as a built-in unit: it checks the tunnel
// token before cloudflared sees it, defines the exec unit (token in the
// environment, never argv; metrics on loopback only), and judges readiness
// from cloudflared's /ready endpoint.
package tunnel

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/google/uuid"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// ErrMalformedToken is matched (errors.Is) by every token parse error. It is
// permanent: restarting cloudflared with the same token cannot help.
var ErrMalformedToken = errors.New("not a cloudflared token")

// TokenError says why a tunnel token is not a cloudflared token. It never
// holds any part of the token.
type TokenError struct {
	// Where names the token's source, e.g. "/molecule/prod/tenants/acme/tunnel-token"; may be empty.
	Where string
	// Reason is a fixed description such as `field "t" is not a UUID`.
	Reason string
}

func (e *TokenError) Error() string {
	where := "tunnel token"
	if e.Where != "" {
		where = "tunnel token under " + e.Where
	}
	return fmt.Sprintf("%s is not a cloudflared token (%s); store the token the Cloudflare dashboard gives for the tunnel (base64 JSON with a, t and s)", where, e.Reason)
}

// Is makes errors.Is(err, ErrMalformedToken) true.
func (e *TokenError) Is(target error) bool { return target == ErrMalformedToken }

// Token is a parsed cloudflared tunnel token. Only Secret is sensitive, and it
// redacts itself; the tunnel ID may be shown in status and sent to the control
// plane, which needs it to delete the tunnel.
type Token struct {
	// AccountTag is the Cloudflare account tag ("a").
	AccountTag string
	// TunnelID is the tunnel's UUID ("t") in canonical lowercase form.
	TunnelID string
	// Secret is the tunnel secret ("s"), standard base64 as in the token.
	Secret secretstore.Secret
	// Endpoint is the optional endpoint ("e"), e.g. "fed".
	Endpoint string
}

// LogValue implements slog.LogValuer: the tunnel and account, never the secret.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("tunnel_id", t.TunnelID), slog.String("account", t.AccountTag))
}

// wireToken mirrors cloudflared's connection.TunnelToken field by field; its
// fields are pointers so a missing field can be told from an empty one.
// Decoding "s" as a string and then base64 matches encoding/json's []byte
// rule, and uuid.Parse matches uuid.UUID's UnmarshalText.
type wireToken struct {
	A *string `json:"a"`
	T *string `json:"t"`
	S *string `json:"s"`
	E *string `json:"e"`
}

// ParseToken parses a cloudflared tunnel token the way cloudflared 2026.7.1
// does (cmd/cloudflared/tunnel.ParseToken): standard, padded base64 (as
// base64.StdEncoding, which skips CR and LF) of a JSON object. It is stricter
// in one way only: a, t and s must be present and t must not be the nil UUID,
// since cloudflared would start with such a token and never connect.
// cloudflared rejects URL-safe and unpadded base64, so ParseToken does too.
func ParseToken(s string) (Token, error) {
	return parse("", s)
}

// CheckSecret parses the token held in a secret; where names its source
// (e.g. "<prefix>/tunnel-token") for the error.
func CheckSecret(where string, s secretstore.Secret) (Token, error) {
	return parse(where, s.Reveal())
}

func parse(where, s string) (Token, error) {
	bad := func(reason string, args ...any) (Token, error) {
		return Token{}, &TokenError{Where: where, Reason: fmt.Sprintf(reason, args...)}
	}
	if s == "" {
		return bad("empty")
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return bad("not standard padded base64: bad input at byte %d of %d", int64(ce), len(s))
		}
		return bad("not standard padded base64")
	}
	var w wireToken
	if err := json.Unmarshal(raw, &w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if f := strings.ToLower(te.Field); f == "a" || f == "t" || f == "s" || f == "e" {
				return bad("field %q must be a string", f)
			}
		}
		return bad("base64 of something that is not a JSON object")
	}
	var tok Token
	switch {
	case w.A == nil || *w.A == "":
		return bad(`field "a" (account tag) is missing`)
	case w.T == nil || *w.T == "":
		return bad(`field "t" (tunnel ID) is missing`)
	case w.S == nil || *w.S == "":
		return bad(`field "s" (tunnel secret) is missing`)
	}
	id, err := uuid.Parse(*w.T)
	if err != nil {
		return bad(`field "t" (tunnel ID) is not a UUID`)
	}
	if id == uuid.Nil {
		return bad(`field "t" (tunnel ID) is the nil UUID`)
	}
	secret, err := base64.StdEncoding.DecodeString(*w.S)
	if err != nil {
		return bad(`field "s" (tunnel secret) is not standard base64`)
	}
	if len(secret) == 0 {
		return bad(`field "s" (tunnel secret) is empty`)
	}
	tok.AccountTag = *w.A
	tok.TunnelID = id.String()
	tok.Secret = secretstore.New(base64.StdEncoding.EncodeToString(secret))
	if w.E != nil {
		tok.Endpoint = *w.E
	}
	return tok, nil
}
