//go:build unix

package secretstore

import (
	"io/fs"
	"path/filepath"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
)

// FileMode is the mode of every secret file.
const FileMode fs.FileMode = 0o600

// WriteFile writes a secret to path atomically, 0600, owned by uid:gid (-1
// keeps the agent's), with safefile.Write: the directory must exist, hold no
// symlink and be owned by the agent's user or uid.
func WriteFile(path string, content Secret, uid, gid int) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	return safefile.Write(dir, base, []byte(content.Reveal()), FileMode, uid, gid)
}

// RemoveFile removes a secret file (a symlink itself, never its target); one
// already gone is not an error.
func RemoveFile(path string) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	return safefile.Remove(dir, base)
}
