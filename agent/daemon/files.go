package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

// writeFiles writes a unit's files atomically (temp file, fsync, rename),
// 0600 unless the config says otherwise, owned by the unit's user.
func (d *Daemon) writeFiles(u config.Unit, log *slog.Logger) error {
	uid, gid := -1, -1
	if u.User != "" {
		usr, err := user.Lookup(u.User)
		if err != nil {
			usr, err = user.LookupId(u.User)
		}
		if err != nil {
			return fmt.Errorf("user %q: %w", u.User, err)
		}
		uid, _ = strconv.Atoi(usr.Uid)
		gid, _ = strconv.Atoi(usr.Gid)
	}
	for _, f := range u.Files {
		content := f.Content
		if name, ok := strings.CutPrefix(content, config.SecretPrefix); ok {
			s, _ := d.secret(name)
			content = s.Reveal()
		}
		mode := os.FileMode(0o600)
		if f.Mode != "" {
			m, _ := strconv.ParseUint(f.Mode, 8, 32)
			mode = os.FileMode(m)
		}
		if err := writeAtomic(f.Path, []byte(content), mode, uid, gid); err != nil {
			return fmt.Errorf("write %s: %w", f.Path, err)
		}
		log.Debug("wrote unit file", "path", f.Path)
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return err
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// removeFiles removes a unit's secret files (plain files stay).
func (d *Daemon) removeFiles(u config.Unit, log *slog.Logger) {
	for _, f := range u.Files {
		if !strings.HasPrefix(f.Content, config.SecretPrefix) {
			continue
		}
		if err := os.Remove(f.Path); err != nil && !os.IsNotExist(err) {
			log.Warn("remove secret file", "path", f.Path, "err", err)
		}
	}
}
