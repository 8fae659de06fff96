//go:build unix

package daemon

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// writeFiles writes a unit's files whose content is not nil, owned by the
// unit's user.
func writeFiles(u config.Unit, contents []*secretstore.Secret, log *slog.Logger) error {
	uid, gid, err := supervisor.Owner(u.User)
	if err != nil {
		return err
	}
	for i, f := range u.Files {
		if contents[i] == nil {
			continue
		}
		if err := writeUnitFile(f, *contents[i], uid, gid); err != nil {
			return err
		}
		log.Debug("wrote unit file", "path", f.Path)
	}
	return nil
}

// writeUnitFile is the one place a unit file reaches the disk: symlink-safe
// (agent/safefile), 0600 (or the configured mode for literal content),
// owned by uid:gid, its mode and owner set before the rename.
func writeUnitFile(f config.File, content secretstore.Secret, uid, gid int) error {
	dir, base := filepath.Split(f.Path)
	if err := safefile.Mkdir(dir, 0o711, uid); err != nil {
		return fmt.Errorf("unit file %s: %w", f.Path, err)
	}
	mode := secretstore.FileMode
	if _, isRef, _ := secretstore.ParseRef(f.Content); !isRef && f.Mode != "" {
		m, _ := strconv.ParseUint(f.Mode, 8, 32)
		mode = os.FileMode(m)
	}
	return safefile.Write(dir, base, []byte(content.Reveal()), mode, uid, gid)
}

// holds reports whether the file at path already holds content.
func holds(path string, content secretstore.Secret) bool {
	b, err := os.ReadFile(path)
	return err == nil && bytes.Equal(b, []byte(content.Reveal()))
}

// unitFilesDir is where, under the agent's state dir, the agent remembers
// the sha256 of the value it last wrote to each file a unit owns; never in
// the unit's directory, which the unit's user can write.
const unitFilesDir = "unit-files"

// writtenRecord is the record of the file at path: one file per path,
// named by the path's sha256.
func writtenRecord(stateDir, path string) (dir, name string) {
	h := sha256.Sum256([]byte(path))
	return filepath.Join(stateDir, unitFilesDir), hex.EncodeToString(h[:])
}

// valueSum is the recorded form of a value.
func valueSum(v secretstore.Secret) string {
	h := sha256.Sum256([]byte(v.Reveal()))
	return hex.EncodeToString(h[:])
}

// lastWritten returns the sum recorded for path ("" for none).
func lastWritten(stateDir, path string) string {
	dir, name := writtenRecord(stateDir, path)
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// recordWritten remembers that the agent wrote v to path.
func recordWritten(stateDir, path string, v secretstore.Secret) error {
	dir, name := writtenRecord(stateDir, path)
	if err := safefile.Mkdir(dir, 0o700, -1); err != nil {
		return fmt.Errorf("unit file record for %s: %w", path, err)
	}
	if err := safefile.Write(dir, name, []byte(valueSum(v)+"\n"), 0o600, -1, -1); err != nil {
		return fmt.Errorf("unit file record for %s: %w", path, err)
	}
	return nil
}

// unitOwnedNeedsWrite decides whether a file the unit owns gets the
// source's value v: only when v differs from the value the agent last
// wrote there (first start, an operator's rotation). A value the unit put
// there since (a token the platform issued the runtime) is never
// overwritten with the source's unchanged, maybe revoked, one. Without a
// state dir, the file is written when it does not hold v.
func unitOwnedNeedsWrite(stateDir, path string, v secretstore.Secret) (write, record bool) {
	if stateDir == "" {
		return !holds(path, v), false
	}
	if lastWritten(stateDir, path) == valueSum(v) {
		return false, false
	}
	// Already there (written before the record existed): only record it.
	return !holds(path, v), true
}

// removeFiles removes a unit's secret files that the agent owns; plain
// files and files the unit owns stay.
func removeFiles(u config.Unit, log *slog.Logger) {
	for _, f := range u.Files {
		if _, isRef, _ := secretstore.ParseRef(f.Content); !isRef || f.OwnedByUnit() {
			continue
		}
		if err := secretstore.RemoveFile(f.Path); err != nil {
			log.Warn("remove secret file", "err", err)
		}
	}
}
