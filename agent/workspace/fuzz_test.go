//go:build unix

package workspace_test

import (
	"testing"

	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

func TestRegisterResult(t *testing.T) {
	tests := []struct {
		line string
		code int
		ok   bool
	}{
		{"Registered with platform: 200", 200, true},
		{"2026-11-26 INFO Registered with platform: 401", 401, true},
		{`INFO httpx: HTTP Request: POST http://10.0.0.5:8080/registry/register "HTTP/1.1 401 Unauthorized"`, 401, true},
		{`HTTP Request: POST http://t/registry/heartbeat "HTTP/1.1 401 Unauthorized"`, 0, false},
		{"Registered with platform: 2000", 0, false},
		{"registration pending", 0, false},
		{"", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			code, ok := workspace.RegisterResult([]byte(tc.line))
			if code != tc.code || ok != tc.ok {
				t.Errorf("got %d %v, want %d %v", code, ok, tc.code, tc.ok)
			}
		})
	}
}

func FuzzRegisterResult(f *testing.F) {
	for _, s := range []string{"Registered with platform: 200", `POST http://x/registry/register "HTTP/2 401 x"`,
		"Registered with platform: 99999", "\xff\x00Registered with platform: 4011"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		code, ok := workspace.RegisterResult(line)
		if ok && (code < 100 || code > 599) {
			t.Errorf("got code %d from %q", code, line)
		}
		if !ok && code != 0 {
			t.Errorf("got code %d without a match", code)
		}
	})
}

func FuzzParseWorkspaceStatus(f *testing.F) {
	for _, s := range []string{`{"id":"x","status":"online"}`, `{"status":""}`, `[]`, `{"status":5}`, ``, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		st, err := workspace.ParseWorkspaceStatus(body)
		if err == nil && st == "" {
			t.Errorf("no error and no status from %q", body)
		}
		if err != nil && st != "" {
			t.Errorf("status %q with error %v", st, err)
		}
	})
}
