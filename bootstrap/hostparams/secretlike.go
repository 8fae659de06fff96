package hostparams

import (
	"encoding/base64"
	"math"
	"regexp"
	"strings"
)

var (
	awsKeyRE  = regexp.MustCompile(`(AKIA|ASIA|AIDA|AROA|AGPA|ANPA|ANVA|AIPA)[A-Z0-9]{16}`)
	jwtRE     = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*`)
	tokenRunR = regexp.MustCompile(`[A-Za-z0-9+/=_-]+`)
	uuidRE    = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	hexRE     = regexp.MustCompile(`^[0-9a-fA-F]+$`)
	// Prefixes of well-known credential formats.
	knownPrefixes = []string{"ghp_", "gho_", "ghs_", "github_pat_", "glpat-", "xoxb-", "xoxp-", "sk-", "sk_live_", "rk_live_", "AIza"}
)

// LooksSecret reports whether v looks like a credential and, if so, why
// (the reason never quotes v). It errs on the side of refusing: user-data
// is readable by anyone who can describe the instance.
func LooksSecret(v string) (reason string, ok bool) {
	switch {
	case strings.Contains(v, "-----BEGIN"):
		return "PEM key material", true
	case awsKeyRE.MatchString(v):
		return "an AWS access key ID", true
	case jwtRE.MatchString(v):
		return "a JWT", true
	}
	for _, run := range tokenRunR.FindAllString(v, -1) {
		if r, ok := runLooksSecret(run); ok {
			return r, true
		}
	}
	return "", false
}

func runLooksSecret(run string) (string, bool) {
	for _, p := range knownPrefixes {
		if strings.HasPrefix(run, p) && len(run) >= len(p)+16 {
			return "an API token (" + p + "…)", true
		}
	}
	if len(run) >= 16 && base64JSON(run) {
		return "base64-encoded JSON (a cloudflared tunnel token?)", true
	}
	// A path's segments are judged one by one; a bare run as a whole too,
	// since standard base64 contains '/'.
	if !strings.HasPrefix(run, "/") && looksRandom(run) {
		return "a high-entropy token", true
	}
	for _, seg := range strings.FieldsFunc(run, func(r rune) bool { return r == '/' || r == '=' }) {
		if looksRandom(seg) {
			return "a high-entropy token", true
		}
	}
	return "", false
}

// base64JSON reports whether s decodes (any base64 alphabet, padded or
// not) to a JSON object or array: how cloudflared tunnel tokens and many
// other credentials are shipped.
func base64JSON(s string) bool {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		t := strings.TrimSpace(string(b))
		if strings.HasPrefix(t, "{\"") || strings.HasPrefix(t, "[{") {
			return true
		}
	}
	return strings.HasPrefix(s, "eyJ") && len(s) >= 20 // {" in base64, even if truncated
}

// looksRandom judges one token: long, mixed character classes, and close
// to uniformly distributed. UUIDs (workspace IDs) are allowed.
func looksRandom(s string) bool {
	if len(s) < 20 || uuidRE.MatchString(s) {
		return false
	}
	if hexRE.MatchString(s) {
		return len(s) >= 32 && hasDigit(s) && hasLetter(s)
	}
	var lower, upper, digit bool
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z':
			lower = true
		case r >= 'A' && r <= 'Z':
			upper = true
		case r >= '0' && r <= '9':
			digit = true
		}
	}
	classes := 0
	for _, b := range []bool{lower, upper, digit} {
		if b {
			classes++
		}
	}
	h := entropy(s)
	switch {
	case classes == 3 && h >= 3.5:
		return true
	case classes == 2 && digit && len(s) >= 24 && h >= 4.0:
		return true
	}
	return false
}

func hasDigit(s string) bool  { return strings.ContainsAny(s, "0123456789") }
func hasLetter(s string) bool { return strings.ContainsAny(strings.ToLower(s), "abcdef") }

// entropy is the Shannon entropy of s in bits per byte.
func entropy(s string) float64 {
	var counts [256]int
	for i := 0; i < len(s); i++ {
		counts[s[i]]++
	}
	var h float64
	n := float64(len(s))
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
