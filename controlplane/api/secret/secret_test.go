package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretNeverPrints(t *testing.T) {
	const value = "tok-9f8e7d6c5b4a"
	s := New(value)
	holder := struct {
		Name  string
		Token Secret
		Ptr   *Secret
	}{"x", s, &s}

	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("m", "secret", s, "holder", holder)
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := s.MarshalText()

	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", s),
		"%s":   fmt.Sprintf("%s", s),
		"%q":   fmt.Sprintf("%q", s),
		"%x":   fmt.Sprintf("%x", s),
		"%#v":  fmt.Sprintf("%#v", s),
		"%+v":  fmt.Sprintf("%+v", holder),
		"%#vh": fmt.Sprintf("%#v", holder),
		"json": string(js),
		"slog": logBuf.String(),
		"text": string(txt),
		"str":  s.String(),
	}
	for name, out := range outputs {
		if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) {
			t.Errorf("%s leaked the value: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s = %q, want it to say %s", name, out, Redacted)
		}
	}
	if s.Reveal() != value {
		t.Errorf("Reveal() = %q, want the value", s.Reveal())
	}
	if !s.Equal(New(value)) || s.Equal(New("other")) || s.IsZero() || !New("").IsZero() {
		t.Error("Equal/IsZero wrong")
	}
}
