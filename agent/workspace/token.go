//go:build unix

package workspace

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// placeToken puts the workspace token in place before a start, for both
// token flows (docs/platform-contract.md §2, §8), and returns the token the
// file holds afterwards ("" for none):
//
//   - (a) pre-minted: the secret source holds the token. It is written when
//     the source holds one the agent has not written yet (first start, an
//     operator's rotation); otherwise the file is left alone, since the
//     runtime may hold a token the platform issued it since.
//   - (b) platform-minted: no token in the source. The file is left as it
//     is: empty at the first start (the runtime's first register mints the
//     token and the runtime writes it), the runtime's own token after.
//
// The agent never deletes the file. A first tokenless start waits until the
// tenant has shown the workspace, not removed: a tokenless register of a
// removed workspace mints it a fresh token.
func (o RuntimeOptions) placeToken(dir string, tok secretstore.Secret, found bool, uid, gid int) (string, error) {
	path := filepath.Join(dir, TokenFile)
	onDisk := readTokenFile(path)
	if !found {
		if onDisk == "" && o.Checker != nil && !o.Checker.Confirmed() {
			return "", &supervisor.BlockedError{Reason: "no workspace token yet (none at " + o.TokenLocation +
				", none in " + path + "): waiting for the tenant to show the workspace before the runtime's first register mints one"}
		}
		return onDisk, nil
	}
	v := strings.TrimSpace(tok.Reveal())
	sum := tokenSum(v)
	written := ""
	if o.State != nil {
		written = o.State.Get().SourceToken
	}
	switch {
	case onDisk == v:
	case o.State == nil && onDisk != "":
		// No memory of what was written: keep what is there.
		return onDisk, nil
	case o.State != nil && written == sum && onDisk != "":
		// Written before; the file now holds the platform's token.
		return onDisk, nil
	default:
		if err := WriteToken(dir, tok, uid, gid); err != nil {
			return "", &supervisor.BlockedError{Reason: fmt.Sprintf("%s: %v", o.TokenLocation, err)}
		}
		if onDisk != "" {
			o.Log.Warn("the secret source holds a new workspace token: replaced the runtime's token file with it", "token", o.TokenLocation)
		}
		onDisk = v
	}
	if o.State != nil && written != sum {
		if err := o.State.SourceTokenWritten(sum); err != nil {
			return "", err
		}
	}
	return onDisk, nil
}

// awaitToken is placeToken's rule when the token file is the unit's own
// (written by the daemon's materializer, never by this package): a first
// tokenless start waits until the tenant has shown the workspace. It returns
// the token the file holds ("" for none).
func (o RuntimeOptions) awaitToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenFile)
	onDisk := readTokenFile(path)
	if onDisk == "" && o.NoSourceToken != nil && o.NoSourceToken() && o.Checker != nil && !o.Checker.Confirmed() {
		return "", &supervisor.BlockedError{Reason: "no workspace token yet (none at " + o.TokenLocation +
			", none in " + path + "): waiting for the tenant to show the workspace before the runtime's first register mints one"}
	}
	return onDisk, nil
}

func tokenSum(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

// readTokenFile returns the token in the file, "" when absent or empty.
// The file belongs to the runtime's user: a symlink or non-regular file
// there is not followed.
func readTokenFile(path string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
