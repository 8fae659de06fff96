package secretstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FileMode is the mode of every secret file.
const FileMode fs.FileMode = 0o600

// WriteFile writes a secret to path atomically: a temporary file in the same
// directory, written, synced, chowned to uid:gid (-1 keeps the agent's),
// made 0600, then renamed over path. Readers see the old or the new content,
// never a mix. The directory must exist.
func WriteFile(path string, content Secret, uid, gid int) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(FileMode); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if _, err = tmp.WriteString(content.Reveal()); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if uid >= 0 || gid >= 0 {
		if err = tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown secret file %s to %d:%d (the agent must run as root to give files to a unit's user): %w", path, uid, gid, err)
		}
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write secret file %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// RemoveFile removes a secret file; one already gone is not an error.
func RemoveFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove secret file %s: %w", path, err)
	}
	return nil
}
