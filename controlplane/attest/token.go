package attest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Token prefixes make a leaked token recognisable by secret scanners.
const (
	HostTokenPrefix       = "mhk_"
	EnrollmentTokenPrefix = "mek_"
)

// NewToken returns a random token with prefix and its SHA-256 hash (the only
// form the control plane stores).
func NewToken(prefix string) (token, hash string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	token = prefix + base64.RawURLEncoding.EncodeToString(b)
	return token, store.HashToken(token)
}

// TokenMatches reports, in constant time, whether presented hashes to hash.
func TokenMatches(hash, presented string) bool {
	if presented == "" || hash == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(store.HashToken(presented)), []byte(hash)) == 1
}
