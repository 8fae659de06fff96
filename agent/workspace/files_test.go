//go:build unix

package workspace_test

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestConfigYAML(t *testing.T) {
	tests := []struct {
		name string
		cfg  workspace.RuntimeConfig
		want string
	}{
		{"claude-code gets runtime_config", workspace.RuntimeConfig{Name: "Research", Description: "d", Tier: 2, Runtime: "claude-code", Model: "m"},
			"name: Research\ndescription: d\nversion: 1.0.0\ntier: 2\nruntime: claude-code\nmodel: m\nruntime_config:\n    timeout: 0\na2a:\n    port: 8000\n"},
		{"langgraph has none", workspace.RuntimeConfig{Name: "n", Runtime: "langgraph", Model: "m", Port: 9000},
			"name: \"n\"\ndescription: \"\"\nversion: 1.0.0\ntier: 0\nruntime: langgraph\nmodel: m\na2a:\n    port: 9000\n"},
		{"deepagents has none", workspace.RuntimeConfig{Name: "n", Runtime: "deepagents", Tier: 1},
			"name: \"n\"\ndescription: \"\"\nversion: 1.0.0\ntier: 1\nruntime: deepagents\nmodel: \"\"\na2a:\n    port: 8000\n"},
		{"quoting survives", workspace.RuntimeConfig{Name: "a: b\n#c", Runtime: "hermes"},
			"name: |-\n    a: b\n    #c\ndescription: \"\"\nversion: 1.0.0\ntier: 0\nruntime: hermes\nmodel: \"\"\nruntime_config:\n    timeout: 0\na2a:\n    port: 8000\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  workspace.RuntimeConfig
		want []string
	}{
		{"ok", workspace.RuntimeConfig{Name: "n", Runtime: "r"}, nil},
		{"missing name and runtime", workspace.RuntimeConfig{}, []string{"workspace.config.name: required", "workspace.config.runtime: required"}},
		{"bad port", workspace.RuntimeConfig{Name: "n", Runtime: "r", Port: 70000}, []string{"workspace.config.port: 70000"}},
		{"negative tier", workspace.RuntimeConfig{Name: "n", Runtime: "r", Tier: -1}, []string{"workspace.config.tier"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("workspace.config")
			if (err == nil) != (tc.want == nil) {
				t.Fatalf("got %v, want errors %v", err, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestWriteToken(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    string
		wantErr string
	}{
		{"plain", "abc_DEF-123", "abc_DEF-123", ""},
		{"trailing newline from the source dropped", "tok\n", "tok", ""},
		{"surrounding blanks dropped", "  tok \r\n", "tok", ""},
		{"empty", " \n", "", "empty"},
		{"two lines", "a\nb", "", "several lines"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := workspace.WriteToken(dir, secretstore.New(tc.value), -1, -1)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error about %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), tc.value) && strings.TrimSpace(tc.value) != "" {
					t.Errorf("error %q echoes the value", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, workspace.TokenFile)
			b, _ := os.ReadFile(path)
			if string(b) != tc.want {
				t.Errorf("content: got %q, want %q", b, tc.want)
			}
			fi, _ := os.Stat(path)
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("mode: got %v, want 0600", fi.Mode().Perm())
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				t.Errorf("dir holds %d entries, want only the token (no temp files)", len(entries))
			}
		})
	}
}

// TestFilesOwnedByRuntimeUser: the configs dir, config.yaml and .auth_token
// belong to the runtime user.
func TestFilesOwnedByRuntimeUser(t *testing.T) {
	testenv.RequireRoot(t)
	u, err := user.Lookup("nobody")
	if err != nil {
		testenv.Missing(t, "user nobody")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir := filepath.Join(t.TempDir(), "configs")
	if err := workspace.EnsureDir(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := workspace.WriteConfig(dir, workspace.RuntimeConfig{Name: "n", Runtime: "r"}, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := workspace.WriteToken(dir, secretstore.New("tok"), uid, gid); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o750}, {filepath.Join(dir, workspace.ConfigFile), 0o644}, {filepath.Join(dir, workspace.TokenFile), 0o600}} {
		fi, err := os.Stat(tc.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: owner got %d:%d, want %d:%d", tc.path, st.Uid, st.Gid, uid, gid)
		}
		if fi.Mode().Perm() != tc.mode {
			t.Errorf("%s: mode got %v, want %v", tc.path, fi.Mode().Perm(), tc.mode)
		}
	}
}

// TestConfigsDirRefusals: root writes into the configs dir only when it is
// no symlink and is owned by root or the runtime's user.
func TestConfigsDirRefusals(t *testing.T) {
	testenv.RequireRoot(t)
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o750); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "configs")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := workspace.EnsureDir(link, 65534, 65534); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("EnsureDir of a symlink: got %v, want a refusal", err)
	}
	if err := workspace.WriteConfig(link, workspace.RuntimeConfig{Name: "n", Runtime: "r"}, 65534, 65534); err == nil {
		t.Errorf("WriteConfig through a symlink succeeded")
	}
	// Owned by a third user: neither root's nor the runtime's.
	if err := os.Chown(real, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if err := workspace.EnsureDir(real, 65534, 65534); err == nil || !strings.Contains(err.Error(), "uid 4242") {
		t.Errorf("EnsureDir of another user's dir: got %v, want a refusal naming its owner", err)
	}
	if err := workspace.WriteToken(real, secretstore.New("tok"), 65534, 65534); err == nil {
		t.Errorf("WriteToken into another user's dir succeeded")
	}
	if ents, _ := os.ReadDir(real); len(ents) != 0 {
		t.Errorf("%d files written into the refused dir", len(ents))
	}
}

func TestEnv(t *testing.T) {
	base := workspace.EnvOptions{WorkspaceID: "ws-1", PlatformURL: "http://10.0.1.5:8080/", HostIP: "10.0.2.7", ConfigsDir: "/opt/configs"}
	t.Run("runtime variables", func(t *testing.T) {
		o := base
		o.Secrets = map[string]secretstore.Secret{"ANTHROPIC_API_KEY": secretstore.New("sk-1")}
		o.Home, o.User = "/home/ubuntu", "ubuntu"
		got, err := workspace.Env(o)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"ADAPTER_MODULE=adapter", "ANTHROPIC_API_KEY=sk-1", "CONFIGS_DIR=/opt/configs", "HOME=/home/ubuntu",
			"HOSTNAME=10.0.2.7", "LOGNAME=ubuntu", "MOLECULE_URL=http://10.0.1.5:8080", "PLATFORM_URL=http://10.0.1.5:8080",
			"PYTHONUNBUFFERED=1", "USER=ubuntu", "WORKSPACE_CONFIG_PATH=/opt/configs", "WORKSPACE_ID=ws-1"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("got %v\nwant %v", got, want)
		}
	})
	tests := []struct {
		name    string
		mod     func(*workspace.EnvOptions)
		wantErr string
	}{
		{"no workspace id", func(o *workspace.EnvOptions) { o.WorkspaceID = "" }, "workspace id"},
		{"bad platform url", func(o *workspace.EnvOptions) { o.PlatformURL = "10.0.0.1:8080" }, "platform url"},
		{"ipv6 host", func(o *workspace.EnvOptions) { o.HostIP = "fd00::1" }, "host ip"},
		{"hostname not ip", func(o *workspace.EnvOptions) { o.HostIP = "ip-10-0-0-1" }, "host ip"},
		{"relative dir", func(o *workspace.EnvOptions) { o.ConfigsDir = "configs" }, "configs dir"},
		{"secret overrides PLATFORM_URL", func(o *workspace.EnvOptions) {
			o.Secrets = map[string]secretstore.Secret{"PLATFORM_URL": secretstore.New("http://evil")}
		}, "would override"},
		{"secret with bad name", func(o *workspace.EnvOptions) {
			o.Secrets = map[string]secretstore.Secret{"A=B": secretstore.New("v")}
		}, "not a valid environment variable name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.mod(&o)
			_, err := workspace.Env(o)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got %v, want an error about %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "http://evil") {
				t.Errorf("error %q echoes a secret value", err)
			}
		})
	}
}
