//go:build unix

package container

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
)

// Secret files: a secret the image reads from a *_FILE variable is written
// to <RunDir>/containers/<unit>/<name> (mode 0400, owned by the reader the
// unit names; the directories 0700 root, so no other host user reaches it),
// bind-mounted read-only at its path in the container, and only the path
// goes into the container's environment. docker inspect shows the path and
// the mount, never the value. The value's digest enters the spec hash, so a
// rotated value recreates the container.

// withSecretFiles writes the unit's secret files and returns env with each
// file's variable added. d.op must be held.
func (d *Driver) withSecretFiles(env []string) ([]string, error) {
	d.fileSums = nil
	if len(d.spec.SecretFiles) == 0 {
		return env, nil
	}
	if d.opts.RunDir == "" || d.opts.Secret == nil {
		return nil, fmt.Errorf("unit %s: container.secret_files needs the agent's run dir and secrets", d.spec.Unit)
	}
	dir, err := d.secretDir()
	if err != nil {
		return nil, err
	}
	out := slices.Clone(env)
	for i, f := range d.spec.SecretFiles {
		v, ok := d.opts.Secret(f.Name())
		if !ok {
			return nil, fmt.Errorf("unit %s: secret_files[%d]: secret %s is missing", d.spec.Unit, i, f.Name())
		}
		uid, gid := f.IDs()
		if err := writeSecretFile(dir, hostName(f.Name()), []byte(v.Reveal()), uid, gid); err != nil {
			return nil, fmt.Errorf("unit %s: secret_files[%d]: %w", d.spec.Unit, i, err)
		}
		sum := sha256.Sum256([]byte(v.Reveal()))
		d.fileSums = append(d.fileSums, "file:"+f.MountPath()+":"+hex.EncodeToString(sum[:]))
		out = append(out, f.Env+"="+f.MountPath())
	}
	return out, nil
}

// hash is the spec hash of image with env and the secret files' digests.
func (d *Driver) hash(image string, env []string) string {
	return d.spec.hash(image, append(slices.Clone(env), d.fileSums...))
}

// secretMounts are the read-only bind mounts of the secret files.
func (d *Driver) secretMounts() []mountSpec {
	var out []mountSpec
	for _, f := range d.spec.SecretFiles {
		out = append(out, mountSpec{Type: "bind", ReadOnly: true, Target: f.MountPath(),
			Source: filepath.Join(d.opts.RunDir, "containers", d.spec.Unit, hostName(f.Name()))})
	}
	return out
}

func hostName(secret string) string { return strings.ReplaceAll(secret, "/", "_") }

// secretDir makes <RunDir>/containers/<unit>, each level a real directory
// (not a symlink) owned by the agent and closed to others (0700), through
// agent/safefile.
func (d *Driver) secretDir() (string, error) {
	dir := filepath.Join(d.opts.RunDir, "containers")
	for _, p := range []string{dir, filepath.Join(dir, d.spec.Unit)} {
		if err := safefile.EnsureDir(p, 0o700, -1, -1); err != nil {
			return "", fmt.Errorf("secret files dir: %w", err)
		}
	}
	return filepath.Join(dir, d.spec.Unit), nil
}

// writeSecretFile replaces dir/name with value (0400, uid:gid) unless it
// already holds exactly that, through agent/safefile (a temp file created
// O_EXCL|O_NOFOLLOW, fchown'd and fchmod'ed before the rename).
func writeSecretFile(dir, name string, value []byte, uid, gid int) error {
	path := filepath.Join(dir, name)
	if f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0); err == nil {
		old, rerr := io.ReadAll(io.LimitReader(f, int64(len(value))+1))
		var st unix.Stat_t
		serr := unix.Fstat(int(f.Fd()), &st)
		_ = f.Close()
		if rerr == nil && serr == nil && bytes.Equal(old, value) && st.Mode&0o7777 == 0o400 && int(st.Uid) == uid && int(st.Gid) == gid {
			return nil
		}
	}
	if err := safefile.Write(dir, name, value, 0o400, uid, gid); err != nil {
		return fmt.Errorf("write secret file %s: %w", name, err)
	}
	return nil
}
