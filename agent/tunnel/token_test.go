//go:build unix

package tunnel

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

const (
	testAccount  = "0123456789abcdef0123456789abcdef"
	testTunnelID = "11111111-2222-4333-8444-555555555555"
	testSecret   = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=" // base64 of 32 bytes
)

// b64 is what the Cloudflare dashboard hands out: std base64 of JSON.
func b64(json string) string { return base64.StdEncoding.EncodeToString([]byte(json)) }

// urlSafe is a valid token in URL-safe base64, which cloudflared rejects.
func urlSafe(t *testing.T) string {
	// "~~~" encodes as "fn5+": the account tag forces a '+' into the token.
	s := base64.URLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"a":"~~~","t":%q,"s":%q}`, testTunnelID, testSecret)))
	if !strings.ContainsAny(s, "-_") {
		t.Fatalf("test token %q has no URL-safe characters", s)
	}
	return s
}

// unpadded is a valid token without its '=' padding, which cloudflared rejects.
func unpadded(t *testing.T) string {
	j := validJSON()
	for len(j)%3 == 0 {
		j += " "
	}
	s := b64(j)
	if !strings.HasSuffix(s, "=") {
		t.Fatalf("test token %q is not padded", s)
	}
	return strings.TrimRight(s, "=")
}

func validJSON() string {
	return fmt.Sprintf(`{"a":%q,"t":%q,"s":%q}`, testAccount, testTunnelID, testSecret)
}

// cloudflaredAccepts mirrors cloudflared 2026.7.1's ParseToken
// (cmd/cloudflared/tunnel/subcommands.go) and connection.TunnelToken.
func cloudflaredAccepts(s string) bool {
	content, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return false
	}
	var tok struct {
		AccountTag   string    `json:"a"`
		TunnelSecret []byte    `json:"s"`
		TunnelID     uuid.UUID `json:"t"`
		Endpoint     string    `json:"e,omitempty"`
	}
	return json.Unmarshal(content, &tok) == nil
}

func TestParseTokenValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		wantID    string
		wantEndpt string
	}{
		{"dashboard form", b64(validJSON()), testTunnelID, ""},
		{"with endpoint", b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":%q,"e":"fed"}`, testAccount, testTunnelID, testSecret)), testTunnelID, "fed"},
		{"upper-case UUID is canonicalised", b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":%q}`, testAccount, strings.ToUpper(testTunnelID), testSecret)), testTunnelID, ""},
		{"braced UUID as uuid.UnmarshalText accepts", b64(fmt.Sprintf(`{"a":%q,"t":"{%s}","s":%q}`, testAccount, testTunnelID, testSecret)), testTunnelID, ""},
		{"keys match case-insensitively like encoding/json", b64(fmt.Sprintf(`{"A":%q,"T":%q,"S":%q}`, testAccount, testTunnelID, testSecret)), testTunnelID, ""},
		{"unknown fields ignored", b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":%q,"x":1}`, testAccount, testTunnelID, testSecret)), testTunnelID, ""},
		{"trailing newline skipped by StdEncoding", b64(validJSON()) + "\n", testTunnelID, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := ParseToken(tt.in)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if tok.TunnelID != tt.wantID {
				t.Errorf("TunnelID = %q, want %q", tok.TunnelID, tt.wantID)
			}
			if tok.AccountTag != testAccount {
				t.Errorf("AccountTag = %q, want %q", tok.AccountTag, testAccount)
			}
			if tok.Secret.Reveal() != testSecret {
				t.Errorf("Secret.Reveal() = %q, want %q", tok.Secret.Reveal(), testSecret)
			}
			if tok.Endpoint != tt.wantEndpt {
				t.Errorf("Endpoint = %q, want %q", tok.Endpoint, tt.wantEndpt)
			}
			if !cloudflaredAccepts(tt.in) {
				t.Errorf("cloudflared would reject %q, which ParseToken accepted", tt.in)
			}
			for _, form := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok)} {
				if strings.Contains(form, testSecret) {
					t.Errorf("printed token %q shows the secret", form)
				}
			}
		})
	}
}

func TestParseTokenInvalid(t *testing.T) {
	t.Parallel()
	valid := b64(validJSON())
	tests := []struct {
		name       string
		in         string
		wantReason string
	}{
		{"empty", "", "empty"},
		{"not base64", "not a token!", "not standard padded base64: bad input at byte 3"},
		{"URL-safe base64 (cloudflared rejects it)", urlSafe(t), "not standard padded base64"},
		{"unpadded base64 (cloudflared rejects it)", unpadded(t), "not standard padded base64"},
		{"trailing space", valid + " ", "not standard padded base64"},
		{"base64 of text", b64("hello"), "not a JSON object"},
		{"base64 of a JSON array", b64(`[1,2]`), "not a JSON object"},
		{"base64 of null", b64(`null`), `"a" (account tag) is missing`},
		{"empty object", b64(`{}`), `"a" (account tag) is missing`},
		{"missing t", b64(fmt.Sprintf(`{"a":%q,"s":%q}`, testAccount, testSecret)), `"t" (tunnel ID) is missing`},
		{"missing s", b64(fmt.Sprintf(`{"a":%q,"t":%q}`, testAccount, testTunnelID)), `"s" (tunnel secret) is missing`},
		{"t not a UUID", b64(fmt.Sprintf(`{"a":%q,"t":"tunnel-1","s":%q}`, testAccount, testSecret)), `"t" (tunnel ID) is not a UUID`},
		{"t nil UUID", b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":%q}`, testAccount, uuid.Nil, testSecret)), "nil UUID"},
		{"t a number", b64(fmt.Sprintf(`{"a":%q,"t":7,"s":%q}`, testAccount, testSecret)), `field "t" must be a string`},
		{"s not base64", b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":"s3cr3t!!"}`, testAccount, testTunnelID)), `"s" (tunnel secret) is not standard base64`},
		{"truncated", valid[:len(valid)/2], "not standard padded base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseToken(tt.in)
			if err == nil {
				t.Fatalf("ParseToken(%q) = nil error, want %q", tt.in, tt.wantReason)
			}
			if !errors.Is(err, ErrMalformedToken) {
				t.Errorf("errors.Is(%v, ErrMalformedToken) = false, want true", err)
			}
			var te *TokenError
			if !errors.As(err, &te) || !strings.Contains(te.Reason, tt.wantReason) {
				t.Errorf("error = %v, want reason containing %q", err, tt.wantReason)
			}
			if len(tt.in) > 3 && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
				t.Errorf("error %q echoes the token", err)
			}
		})
	}
}

func TestCheckSecretNamesSource(t *testing.T) {
	t.Parallel()
	const secret = "dG9wLXNlY3JldC10b2tlbi12YWx1ZQ=" // bad padding
	_, err := CheckSecret("/molecule/prod/tenants/acme/tunnel-token", secretstore.New(secret))
	want := "tunnel token under /molecule/prod/tenants/acme/tunnel-token is not a cloudflared token ("
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("CheckSecret error = %v, want prefix %q", err, want)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q echoes the token", err)
	}
	tok, err := CheckSecret("x", secretstore.New(b64(validJSON())))
	if err != nil || tok.TunnelID != testTunnelID {
		t.Errorf("CheckSecret(valid) = %v, %v; want tunnel %s", tok.TunnelID, err, testTunnelID)
	}
}

func FuzzParseToken(f *testing.F) {
	seeds := []string{
		"", "=", "e30=", "bnVsbA==", b64(validJSON()),
		b64(fmt.Sprintf(`{"a":%q,"t":%q,"s":%q,"e":"fed"}`, testAccount, testTunnelID, testSecret)),
		b64(`{"a":"","t":"","s":""}`), b64(`{"a":"x","t":"00000000-0000-0000-0000-000000000000","s":"AA=="}`),
		b64(`{"a":"x","t":"urn:uuid:` + testTunnelID + `","s":"AA=="}`),
		b64(`{"a":"x","t":"` + testTunnelID + `","s":"\u0041A=="}`),
		b64(`{"a":1,"t":[],"s":{}}`), b64(`"string"`), b64(`{"a":"x","t":"` + testTunnelID + `","s":null}`),
		b64(validJSON()) + "\r\n", "eyJhIjoiYSJ9",
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		tok, err := ParseToken(in)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v is not ErrMalformedToken", err)
			}
			if len(in) >= 8 && strings.Contains(err.Error(), in) {
				t.Fatalf("error %q echoes the token", err)
			}
			return
		}
		if !cloudflaredAccepts(in) {
			t.Fatalf("ParseToken accepted %q, which cloudflared rejects", in)
		}
		if id, perr := uuid.Parse(tok.TunnelID); perr != nil || id == uuid.Nil || id.String() != tok.TunnelID {
			t.Fatalf("TunnelID %q is not a canonical non-nil UUID", tok.TunnelID)
		}
		if tok.AccountTag == "" || tok.Secret.IsZero() {
			t.Fatalf("accepted token with empty account or secret: %+v", tok)
		}
		if s := fmt.Sprintf("%v %+v %#v", tok, tok, tok); strings.Contains(s, tok.Secret.Reveal()) {
			t.Fatalf("printed token shows the secret: %s", s)
		}
	})
}
