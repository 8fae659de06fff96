//go:build unix

package container

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

func TestParseAuth(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("bot:tok3n"))
	tests := []struct {
		name, secret, host string
		wantUser, wantPass string
		wantErr            string
	}{
		{"user:token", "bot:tok3n", "ghcr.io", "bot", "tok3n", ""},
		{"config auth", `{"auths":{"ghcr.io":{"auth":"` + b64 + `"}}}`, "ghcr.io", "bot", "tok3n", ""},
		{"config https key", `{"auths":{"https://ghcr.io/v2/":{"username":"bot","password":"tok3n"}}}`, "ghcr.io", "bot", "tok3n", ""},
		{"docker hub alias", `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64 + `"}}}`, "docker.io", "bot", "tok3n", ""},
		{"no entry", `{"auths":{"quay.io":{"auth":"` + b64 + `"}}}`, "ghcr.io", "", "", "no entry for ghcr.io"},
		{"bad json", `{"auths":`, "ghcr.io", "", "", "do not parse"},
		{"bad base64", `{"auths":{"ghcr.io":{"auth":"%%%"}}}`, "ghcr.io", "", "", "not base64"},
		{"empty", "  ", "ghcr.io", "", "", "empty"},
		{"no colon", "justatoken", "ghcr.io", "", "", "neither"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuth(secretstore.New(tt.secret), tt.host)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseAuth err = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "tok3n") {
					t.Errorf("error %q quotes the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAuth: %v", err)
			}
			if got.Username != tt.wantUser || got.Password != tt.wantPass || got.ServerAddress != tt.host {
				t.Errorf("ParseAuth = %s/%s@%s, want %s/%s@%s", got.Username, got.Password, got.ServerAddress, tt.wantUser, tt.wantPass, tt.host)
			}
		})
	}
}

func TestRegistryHost(t *testing.T) {
	for in, want := range map[string]string{
		"postgres:16": "docker.io",
		"ghcr.io/molecule-ai/platform-tenant@sha256:" + strings.Repeat("a", 64): "ghcr.io",
		"127.0.0.1:5000/test/app": "127.0.0.1:5000",
	} {
		if got, err := RegistryHost(in); err != nil || got != want {
			t.Errorf("RegistryHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestSpecHash(t *testing.T) {
	s := Spec{Unit: "app", Image: "x", Volumes: []config.VolumeMount{{Name: "v", Path: "/d"}}}
	base := s.hash("img@1", []string{"A=1", "SECRET=hunter2"})
	tests := []struct {
		name  string
		s     Spec
		image string
		env   []string
		same  bool
	}{
		{"same", s, "img@1", []string{"A=1", "SECRET=hunter2"}, true},
		{"env order", s, "img@1", []string{"SECRET=hunter2", "A=1"}, true},
		{"secret rotated", s, "img@1", []string{"A=1", "SECRET=hunter3"}, false},
		{"image", s, "img@2", []string{"A=1", "SECRET=hunter2"}, false},
		{"volume", Spec{Unit: "app", Image: "x"}, "img@1", []string{"A=1", "SECRET=hunter2"}, false},
		{"cmd", Spec{Unit: "app", Image: "x", Volumes: s.Volumes, Cmd: []string{"-v"}}, "img@1", []string{"A=1", "SECRET=hunter2"}, false},
		{"stop signal default", Spec{Unit: "app", Image: "x", Volumes: s.Volumes, StopSignal: "SIGTERM"}, "img@1", []string{"A=1", "SECRET=hunter2"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.s.hash(tt.image, tt.env)
			if (got == base) != tt.same {
				t.Errorf("hash equal = %v, want %v", got == base, tt.same)
			}
			if len(got) != 64 || strings.Contains(got, "hunter") {
				t.Errorf("hash = %q, want 64 hex digits", got)
			}
		})
	}
}

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "containers", "app.json")
	st, err := loadState(p)
	if err != nil || st.Pending != nil || st.Current != "" {
		t.Fatalf("loadState(missing) = %+v, %v; want zero state", st, err)
	}
	want := unitState{ConfigImage: "a", Current: "b", Previous: "a", Bad: "c", Pending: &journal{ID: "1", Step: stepWaiting, OldID: "o", NewID: "n"}}
	if err := saveState(p, want); err != nil {
		t.Fatalf("saveState: %v", err)
	}
	got, err := loadState(p)
	if err != nil {
		t.Fatalf("loadState: %v", err)
	}
	if got.Current != want.Current || got.Bad != want.Bad || got.Pending == nil || *got.Pending != *want.Pending {
		t.Errorf("round trip = %+v, want %+v", got, want)
	}
	matches, _ := filepath.Glob(p + ".tmp-*")
	if len(matches) != 0 {
		t.Errorf("temp files left: %v", matches)
	}
}

func TestStatusFacet(t *testing.T) {
	tests := []struct {
		s    Status
		want supervisor.ContainerFacet
	}{
		{Status{Image: "i"}, supervisor.ContainerFacet{Image: "i"}},
		{Status{Image: "i@sha256:ab"}, supervisor.ContainerFacet{Image: "i@sha256:ab", Digest: "sha256:ab"}},
		{Status{Image: "i", Phase: PhasePulling, To: "j", Pull: PullProgress{Current: 5, Total: 10}},
			supervisor.ContainerFacet{Image: "i", Update: &supervisor.UpdateFacet{Phase: "pulling", To: "j", PullBytes: 5, PullTotal: 10}}},
		{Status{Image: "i", Phase: PhaseRolledBack, To: "j", Reason: "not ready", Pull: PullProgress{Current: 5, Total: 10}},
			supervisor.ContainerFacet{Image: "i", Update: &supervisor.UpdateFacet{Phase: "rolled_back", To: "j", Reason: "not ready"}}},
	}
	for _, tt := range tests {
		got := tt.s.Facet()
		if got.Image != tt.want.Image || got.Digest != tt.want.Digest || (got.Update == nil) != (tt.want.Update == nil) ||
			(got.Update != nil && *got.Update != *tt.want.Update) {
			t.Errorf("Facet() = %+v (update %+v), want %+v (update %+v)", got, got.Update, tt.want, tt.want.Update)
		}
	}
}

func TestCorruptStateNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "app.json")
	if err := os.WriteFile(p, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadState(p)
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("loadState(corrupt) = %v, want an error naming %s", err, p)
	}
}

func FuzzParseAuth(f *testing.F) {
	for _, s := range []string{"u:p", `{"auths":{"ghcr.io":{"auth":"dTpw"}}}`, `{"auths":{"h":{}}}`, "{", ":", `{"auths":null}`} {
		f.Add(s, "ghcr.io")
	}
	f.Fuzz(func(t *testing.T, s, host string) {
		a, err := ParseAuth(secretstore.New(s), host)
		if err == nil && a.ServerAddress != host {
			t.Errorf("ParseAuth server = %q, want %q", a.ServerAddress, host)
		}
		if err != nil && len(s) >= 8 && strings.Contains(err.Error(), s) {
			t.Errorf("error %q quotes the secret", err)
		}
	})
}

func TestReadPull(t *testing.T) {
	stream := `{"status":"Pulling from test/app","id":"127.0.0.1:1/test/app@sha256:ce"}
{"status":"Pulling fs layer","progressDetail":{},"id":"408353435997"}
{"status":"Already exists","progressDetail":{},"id":"aaaaaaaaaaaa"}
{"status":"Downloading","progressDetail":{"current":36634,"total":2775691},"id":"408353435997"}
{"status":"Download complete","progressDetail":{},"id":"408353435997"}
{"status":"Extracting","progressDetail":{"current":32768,"total":2775691},"id":"408353435997"}
{"status":"Pull complete","progressDetail":{},"id":"408353435997"}
{"status":"Digest: sha256:ce"}
`
	tests := []struct {
		name    string
		in      string
		want    PullProgress
		wantErr string
	}{
		{"complete", stream, PullProgress{Layers: 2, Current: 2775691, Total: 2775691}, ""},
		{"error", stream + `{"error":"manifest unknown","errorDetail":{"message":"manifest unknown"}}` + "\n", PullProgress{}, "manifest unknown"},
		{"garbage", "{", PullProgress{}, "read pull progress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Driver{}
			err := d.readPull(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readPull err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("readPull: %v", err)
			}
			if got := d.Status().Pull; got != tt.want {
				t.Errorf("pull progress = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoadAgentIDIsStable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := LoadAgentID(dir)
	if err != nil || !strings.HasPrefix(first, "agent-") {
		t.Fatalf("LoadAgentID = %q, %v", first, err)
	}
	again, err := LoadAgentID(dir)
	if err != nil || again != first {
		t.Errorf("second LoadAgentID = %q, %v; want %q", again, err, first)
	}
}

func TestSecretAuth(t *testing.T) {
	store := map[string]secretstore.Secret{"ghcr-auth": secretstore.New("bot:tok3n")}
	get := func(n string) (secretstore.Secret, bool) { s, ok := store[n]; return s, ok }
	img := "ghcr.io/molecule-ai/platform-tenant@sha256:" + strings.Repeat("a", 64)
	a, err := SecretAuth(get, "ghcr-auth")(context.Background(), img)
	if err != nil || a.Username != "bot" || a.ServerAddress != "ghcr.io" {
		t.Errorf("SecretAuth = %s@%s, %v; want bot@ghcr.io", a.Username, a.ServerAddress, err)
	}
	if _, err := SecretAuth(get, "nope")(context.Background(), img); err == nil || !strings.Contains(err.Error(), `"nope" is missing`) {
		t.Errorf("missing secret err = %v", err)
	}
}

func TestParseDesired(t *testing.T) {
	pinned := "ghcr.io/a/b@sha256:" + strings.Repeat("c", 64)
	tests := []struct {
		name, in string
		want     map[string]string
		wantErr  string
	}{
		{"one unit", `{"platform":"` + pinned + `"}`, map[string]string{"platform": pinned}, ""},
		{"empty", `{}`, map[string]string{}, ""},
		{"null", `null`, map[string]string{}, ""},
		{"tag", `{"platform":"ghcr.io/a/b:latest"}`, nil, `unit "platform"`},
		{"not object", `["x"]`, nil, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseDesired([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDesired err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != len(tt.want) || got["platform"] != tt.want["platform"] {
				t.Errorf("ParseDesired = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
	if got, err := ReadDesired(filepath.Join(t.TempDir(), "missing.json")); err != nil || len(got) != 0 {
		t.Errorf("ReadDesired(missing) = %v, %v; want empty", got, err)
	}
}

func FuzzParseDesired(f *testing.F) {
	f.Add([]byte(`{"platform":"ghcr.io/a/b@sha256:` + strings.Repeat("c", 64) + `"}`))
	f.Add([]byte(`{"x":"y:latest"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseDesired(b)
		if err != nil {
			return
		}
		for u, img := range m {
			if !strings.Contains(img, "@sha256:") {
				t.Errorf("unit %q accepted unpinned %q", u, img)
			}
		}
	})
}
