//go:build unix

package config

import (
	"slices"
	"strings"
	"testing"
)

func TestSecretFilesValidate(t *testing.T) {
	unit := func(files string) string {
		return "units:\n  - name: db\n    kind: container\n    container:\n      image: postgres:16\n      secret_files:\n" + files +
			"    env:\n      POSTGRES_USER: molecule\n"
	}
	tests := []struct {
		name, files, want string // want "" = valid
	}{
		{"postgres", "        - {env: POSTGRES_PASSWORD_FILE, secret: \"secret:postgres-password\"}\n", ""},
		{"owner and path", "        - {env: A_FILE, secret: \"secret:a/b\", path: /run/s/a, owner: \"999:999\"}\n", ""},
		{"bad env", "        - {env: \"1A\", secret: \"secret:a\"}\n", "units[0].container.secret_files[0].env"},
		{"env also in unit env", "        - {env: POSTGRES_USER, secret: \"secret:a\"}\n", "POSTGRES_USER is also set in the unit's env"},
		{"literal value", "        - {env: A_FILE, secret: hunter2}\n", "units[0].container.secret_files[0].secret: \"hunter2\" must be a secret reference"},
		{"relative path", "        - {env: A_FILE, secret: \"secret:a\", path: run/a}\n", "units[0].container.secret_files[0].path"},
		{"same path twice", "        - {env: A_FILE, secret: \"secret:a\"}\n        - {env: B_FILE, secret: \"secret:a\"}\n", "secret_files[1].path: /run/secrets/a is already used by secret_files[0]"},
		{"same env twice", "        - {env: A_FILE, secret: \"secret:a\"}\n        - {env: A_FILE, secret: \"secret:b\"}\n", "secret_files[1].env: A_FILE is already set by secret_files[0]"},
		{"owner by name", "        - {env: A_FILE, secret: \"secret:a\", owner: postgres}\n", "units[0].container.secret_files[0].owner"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(unit(tt.files)))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse = %v, want error containing %q", err, tt.want)
			case tt.want == "":
				if refs := c.Units[0].SecretRefs(); len(refs) == 0 {
					t.Errorf("SecretRefs = %v, want the secret files' secrets (restart on rotation, redaction)", refs)
				}
			}
		})
	}
}

func TestTenantPostgresPasswordIsAFile(t *testing.T) {
	c, err := Parse(strings.NewReader("role: tenant\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range c.Units {
		if u.Name != "postgres" {
			continue
		}
		if _, ok := u.Env["POSTGRES_PASSWORD"]; ok {
			t.Error("postgres gets POSTGRES_PASSWORD in env: docker inspect would show it")
		}
		f := u.Container.SecretFiles
		if len(f) != 1 || f[0].Env != "POSTGRES_PASSWORD_FILE" || f[0].Name() != "postgres-password" || f[0].MountPath() != "/run/secrets/postgres-password" {
			t.Errorf("postgres secret files = %+v", f)
		}
		if !slices.Contains(u.SecretRefs(), "postgres-password") {
			t.Errorf("SecretRefs %v lacks postgres-password", u.SecretRefs())
		}
		return
	}
	t.Fatal("tenant role has no postgres unit")
}
