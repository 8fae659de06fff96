//go:build unix

package secretstore_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

func TestParseFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "yaml", in: "tunnel-token: abc\ndb/password: \"p w\"\nport: 5432\nversion: 1.10\n",
			want: map[string]string{"tunnel-token": "abc", "db/password": "p w", "port": "5432", "version": "1.10"}},
		{name: "yaml block scalar", in: "cert: |\n  line1\n  line2\n", want: map[string]string{"cert": "line1\nline2\n"}},
		{name: "json", in: `{"tunnel-token": "abc", "n": 5, "b": true}`, want: map[string]string{"tunnel-token": "abc", "n": "5", "b": "true"}},
		{name: "json with tabs", in: "\t{\t\"a\":\t\"x\"}\n", want: map[string]string{"a": "x"}},
		{name: "empty", in: "", wantErr: "no secrets"},
		{name: "empty json", in: "{}", wantErr: "no secrets"},
		{name: "yaml list", in: "- a\n- b\n", wantErr: "want a mapping"},
		{name: "yaml nested", in: "db:\n  password: x\n", wantErr: `key "db": value must be a string`},
		{name: "yaml null", in: "a:\n", wantErr: `key "a": value must be a string`},
		{name: "yaml duplicate", in: "a: 1\na: 2\n", wantErr: `key "a" appears twice`},
		{name: "yaml bad name", in: "a b: 1\n", wantErr: "not allowed"},
		{name: "json nested", in: `{"a": {"b": "c"}}`, wantErr: `key "a": value must be a string`},
		{name: "json null", in: `{"a": null}`, wantErr: `key "a": value must be a string`},
		{name: "json duplicate", in: `{"a": "1", "a": "2"}`, wantErr: `key "a" appears twice`},
		{name: "json trailing", in: `{"a": "1"} {}`, wantErr: "trailing data"},
		{name: "json truncated", in: `{"a": "supersecret`, wantErr: "json"},
		{name: "json array", in: `[1]`, wantErr: "want a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := secretstore.ParseFile([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseFile error = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "supersecret") {
					t.Errorf("error %q echoes a value", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFile: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d secrets, want %d", len(got), len(tt.want))
			}
			for n, v := range tt.want {
				if got[n].Reveal() != v {
					t.Errorf("secret %s = %q, want %q", n, got[n].Reveal(), v)
				}
			}
		})
	}
}

func TestFileSource(t *testing.T) {
	t.Parallel()
	p := writeTemp(t, "tunnel-token: first-value\n")
	src := secretstore.NewFile(p)
	got, err := src.Fetch(t.Context())
	if err != nil || got["tunnel-token"].Reveal() != "first-value" {
		t.Fatalf("Fetch = %v, %v", got, err)
	}
	if err := os.WriteFile(p, []byte("tunnel-token: second-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := src.Fetch(t.Context()); got["tunnel-token"].Reveal() != "second-value" {
		t.Error("Fetch after editing the file did not see the new value")
	}
	if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Fetch(t.Context()); !errors.Is(err, secretstore.ErrEmpty) || !strings.Contains(err.Error(), p) {
		t.Errorf("Fetch of an empty file = %v, want ErrEmpty naming %s", err, p)
	}
}

func TestWriteFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := filepath.Join(dir, "tunnel-token")
	for _, v := range []string{"first-value", "second"} {
		if err := secretstore.WriteFile(p, secretstore.New(v), -1, -1); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != v {
			t.Fatalf("content = %q, %v; want %q", b, err, v)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries after two writes, want 1 (no temp files left)", len(entries))
	}
	if err := secretstore.RemoveFile(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after RemoveFile stat = %v, want not exist", err)
	}
	if err := secretstore.RemoveFile(p); err != nil {
		t.Errorf("RemoveFile of a missing file = %v, want nil", err)
	}
	if err := secretstore.WriteFile(filepath.Join(dir, "missing", "x"), secretstore.New("v"), -1, -1); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestWriteFileReplacesSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "token")
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if err := secretstore.WriteFile(p, secretstore.New("v"), -1, -1); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("WriteFile followed a symlink and overwrote its target")
	}
}

func TestWriteFileChown(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	p := filepath.Join(t.TempDir(), "token")
	const nobody = 65534
	if err := secretstore.WriteFile(p, secretstore.New("v"), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != nobody || st.Gid != nobody || fi.Mode().Perm() != 0o600 {
		t.Errorf("owner %d:%d mode %v, want %d:%d 0600", st.Uid, st.Gid, fi.Mode().Perm(), nobody, nobody)
	}
}

func FuzzParseFile(f *testing.F) {
	for _, s := range []string{
		"tunnel-token: abc\n", `{"a":"b"}`, "a: |\n  x\n", "- x", "{", "a: &x 1\nb: *x\n", "? [a]\n: b\n",
		`{"a":1e999}`, "\ufeff{}", "a: !!binary aGVsbG8=\n", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := secretstore.ParseFile(data)
		if err != nil {
			return
		}
		if len(m) == 0 {
			t.Fatal("ParseFile returned no secrets and no error")
		}
		for n := range m {
			if err := secretstore.ValidName(n); err != nil {
				t.Fatalf("ParseFile accepted invalid name %q: %v", n, err)
			}
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"secret:tunnel-token", "secret:a/b", "secret:", "secret:../x", "plain", "secret:a//b", "secret:é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		name, ok, err := secretstore.ParseRef(v)
		switch {
		case !ok && (err != nil || name != ""):
			t.Fatalf("ParseRef(%q) = %q, %v, %v: not a reference yet a name or error", v, name, ok, err)
		case ok && err == nil && secretstore.RefPrefix+name != v:
			t.Fatalf("ParseRef(%q) name %q does not round-trip", v, name)
		case ok && err == nil && secretstore.ValidName(name) != nil:
			t.Fatalf("ParseRef(%q) accepted invalid name %q", v, name)
		case !ok && strings.HasPrefix(v, secretstore.RefPrefix):
			t.Fatalf("ParseRef(%q) missed the prefix", v)
		}
	})
}
