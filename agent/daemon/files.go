//go:build unix

package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

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
