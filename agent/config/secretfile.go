//go:build unix

package config

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// SecretFile passes a secret to a container as a file, for images that
// read a *_FILE variable (PostgreSQL's POSTGRES_PASSWORD_FILE): the agent
// writes the value to a 0400 file under its run dir, bind-mounts it
// read-only at Path and sets Env to Path, so `docker inspect` shows a path,
// never the value.
type SecretFile struct {
	// Env is the variable the image reads the path from, e.g. POSTGRES_PASSWORD_FILE.
	Env string `yaml:"env"`
	// Secret is the reference, e.g. "secret:postgres-password".
	Secret string `yaml:"secret"`
	// Path is where the file appears in the container; default
	// /run/secrets/<secret name, / as _>.
	Path string `yaml:"path"`
	// Owner is "uid[:gid]" owning the file (mode 0400): the user the image
	// reads it as. Default 0:0 (images whose entrypoint reads it as root,
	// as postgres does before dropping privileges).
	Owner string `yaml:"owner"`
}

var ownerRe = regexp.MustCompile(`^[0-9]{1,10}(:[0-9]{1,10})?$`)

// Name is the referenced secret's name.
func (f SecretFile) Name() string { return strings.TrimPrefix(f.Secret, SecretPrefix) }

// MountPath is Path or its default.
func (f SecretFile) MountPath() string {
	if f.Path != "" {
		return f.Path
	}
	return "/run/secrets/" + strings.ReplaceAll(f.Name(), "/", "_")
}

// IDs returns the owner's uid and gid; call it on a validated SecretFile.
func (f SecretFile) IDs() (uid, gid int) {
	if f.Owner == "" {
		return 0, 0
	}
	u, g, hasGID := strings.Cut(f.Owner, ":")
	uid, _ = strconv.Atoi(u)
	gid = uid
	if hasGID {
		gid, _ = strconv.Atoi(g)
	}
	return uid, gid
}

func (c *Container) validateSecretFiles(p string, env map[string]string) error {
	paths := map[string]int{}
	for i, f := range c.SecretFiles {
		fp := fmt.Sprintf("%s.secret_files[%d]", p, i)
		if !envKeyRe.MatchString(f.Env) {
			return fieldErr(fp+".env", "%q is not an environment variable name (e.g. POSTGRES_PASSWORD_FILE)", f.Env)
		}
		if _, dup := env[f.Env]; dup {
			return fieldErr(fp+".env", "%s is also set in the unit's env", f.Env)
		}
		if !strings.HasPrefix(f.Secret, SecretPrefix) || !secretNameRe.MatchString(f.Name()) {
			return fieldErr(fp+".secret", "%q must be a secret reference like secret:postgres-password", f.Secret)
		}
		mp := f.MountPath()
		if !path.IsAbs(mp) || path.Clean(mp) != mp || mp == "/" {
			return fieldErr(fp+".path", "%q must be a clean absolute path other than /", mp)
		}
		if j, dup := paths[mp]; dup {
			return fieldErr(fp+".path", "%s is already used by secret_files[%d]", mp, j)
		}
		paths[mp] = i
		if f.Owner != "" && !ownerRe.MatchString(f.Owner) {
			return fieldErr(fp+".owner", "%q is not uid or uid:gid (numbers: the container's user)", f.Owner)
		}
		if uid, gid := f.IDs(); uid > 1<<31-1 || gid > 1<<31-1 {
			return fieldErr(fp+".owner", "%q is out of range", f.Owner)
		}
	}
	for j, f := range c.SecretFiles {
		for i := range j {
			if c.SecretFiles[i].Env == f.Env {
				return fieldErr(fmt.Sprintf("%s.secret_files[%d].env", p, j), "%s is already set by secret_files[%d]", f.Env, i)
			}
		}
	}
	return nil
}
