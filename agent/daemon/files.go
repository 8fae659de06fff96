package daemon

import (
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

// writeFiles writes a unit's files atomically, 0600 (or the configured mode
// for literal content), owned by the unit's user.
func writeFiles(u config.Unit, contents []secretstore.Secret, log *slog.Logger) error {
	uid, gid, err := supervisor.Owner(u.User)
	if err != nil {
		return err
	}
	for i, f := range u.Files {
		dir, base := filepath.Split(f.Path)
		if err := safefile.Mkdir(dir, 0o711, uid); err != nil {
			return fmt.Errorf("unit file %s: %w", f.Path, err)
		}
		mode := secretstore.FileMode
		if _, isRef, _ := secretstore.ParseRef(f.Content); !isRef && f.Mode != "" {
			m, _ := strconv.ParseUint(f.Mode, 8, 32)
			mode = os.FileMode(m)
		}
		if err := safefile.Write(dir, base, []byte(contents[i].Reveal()), mode, uid, gid); err != nil {
			return err
		}
		log.Debug("wrote unit file", "path", f.Path)
	}
	return nil
}

// removeFiles removes a unit's secret files; plain files stay.
func removeFiles(u config.Unit, log *slog.Logger) {
	for _, f := range u.Files {
		if _, isRef, _ := secretstore.ParseRef(f.Content); !isRef {
			continue
		}
		if err := secretstore.RemoveFile(f.Path); err != nil {
			log.Warn("remove secret file", "err", err)
		}
	}
}
