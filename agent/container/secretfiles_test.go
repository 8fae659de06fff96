//go:build unix

package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/docker/docker/api/types/mount"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// TestSecretFileNotInDockerInspect: a secret passed as a *_FILE reaches
// the container (its non-root user reads the 0400 file) while docker
// inspect holds only the path; a rotated value recreates the container
// with the new file.
func TestSecretFileNotInDockerInspect(t *testing.T) {
	testenv.RequireRoot(t) // the file is chowned to the container's user
	r := newRig(t)
	runDir := t.TempDir()
	values := map[string]string{"db/password": "pg-secret-value-0123456789"}
	s := r.spec(r.apps.V1)
	s.User = "1000:1000"
	s.SecretFiles = []config.SecretFile{{Env: "APP_PASSWORD_FILE", Secret: "secret:db/password", Owner: "1000:1000"}}
	o := r.options()
	o.RunDir = runDir
	o.Secret = func(name string) (secretstore.Secret, bool) {
		v, ok := values[name]
		return secretstore.New(v), ok
	}
	d, err := New(o, s)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(v string) string { s := sha256.Sum256([]byte(v)); return hex.EncodeToString(s[:]) }
	const inContainer = "/run/secrets/db_password"

	first := r.start(d, []string{"APP_PLAIN=visible"})
	r.waitBody("/file"+inContainer, sum(values["db/password"]))
	inspectHasNoSecret(t, r, first.ContainerID(), values["db/password"])

	host := filepath.Join(runDir, "containers", "app", "db_password")
	fi, err := os.Lstat(host)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o400 || st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("host file %s mode %v owner %d:%d, want 0400 1000:1000", host, fi.Mode().Perm(), st.Uid, st.Gid)
	}
	for _, dir := range []string{filepath.Join(runDir, "containers"), filepath.Dir(host)} {
		if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v (%v), want 0700", dir, fi.Mode().Perm(), err)
		}
	}

	// Rotated: the next start recreates the container with the new file.
	ctx, cancel := context.WithTimeout(context.Background(), testenv.Long)
	defer cancel()
	if err := first.Stop(ctx, testenv.Short); err != nil {
		t.Fatal(err)
	}
	values["db/password"] = "pg-rotated-value-9876543210"
	second := r.start(d, []string{"APP_PLAIN=visible"})
	if second.ContainerID() == first.ContainerID() {
		t.Fatal("container not recreated after the secret file's value changed")
	}
	r.waitBody("/file"+inContainer, sum(values["db/password"]))
	inspectHasNoSecret(t, r, second.ContainerID(), values["db/password"])
}

// inspectHasNoSecret fails t if docker inspect of id holds value anywhere,
// and checks the file's variable and read-only mount are there instead.
func inspectHasNoSecret(t *testing.T, r *rig, id, value string) {
	t.Helper()
	c, raw, err := r.cli.ContainerInspectWithRaw(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), value) {
		t.Errorf("docker inspect holds the secret value")
	}
	if !slices.Contains(c.Config.Env, "APP_PASSWORD_FILE=/run/secrets/db_password") || !slices.Contains(c.Config.Env, "APP_PLAIN=visible") {
		t.Errorf("env = %v, want APP_PASSWORD_FILE=/run/secrets/db_password and APP_PLAIN", c.Config.Env)
	}
	ok := false
	for _, m := range c.Mounts {
		if m.Destination == "/run/secrets/db_password" && m.Type == mount.TypeBind && !m.RW {
			ok = true
		}
	}
	if !ok {
		b, _ := json.Marshal(c.Mounts)
		t.Errorf("mounts %s, want /run/secrets/db_password bound read-only", b)
	}
}

// TestSecretFileRefusals: missing secret, missing run dir and a symlinked
// secrets directory all refuse the start with a clear error.
func TestSecretFileRefusals(t *testing.T) {
	r := &rig{t: t, agent: "secretfiles-test", state: t.TempDir()}
	s := testSpec(r.agent, 8080, "example/app:1")
	s.SecretFiles = []config.SecretFile{{Env: "APP_PASSWORD_FILE", Secret: "secret:db/password"}}
	none := func(string) (secretstore.Secret, bool) { return secretstore.Secret{}, false }
	some := func(string) (secretstore.Secret, bool) { return secretstore.New("v"), true }
	link := t.TempDir()
	if err := os.Symlink(t.TempDir(), filepath.Join(link, "containers")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		runDir string
		secret func(string) (secretstore.Secret, bool)
		want   string
	}{
		{"no run dir", "", some, "container.secret_files needs the agent's run dir and secrets"},
		{"missing secret", t.TempDir(), none, "unit app: secret_files[0]: secret db/password is missing"},
		{"symlinked dir", link, some, "containers is a symlink"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Driver{spec: s, opts: Options{RunDir: tt.runDir, Secret: tt.secret}}
			_, err := d.withSecretFiles(nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("withSecretFiles = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
