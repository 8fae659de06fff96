// Package secret holds a sensitive value in memory as a type that never
// prints, logs or marshals it. It has no dependencies, so the control plane
// and the agent share it.
package secret

import (
	"fmt"
	"log/slog"
)

// Redacted is what a Secret shows in every printed, logged or marshalled form.
const Redacted = "[redacted]"

// Secret is a sensitive string. Its String, Format, LogValue, MarshalJSON,
// MarshalText and GoString all give [redacted]; only Reveal returns the value.
type Secret struct {
	v string
}

// New wraps a sensitive value.
func New(v string) Secret { return Secret{v: v} }

// Reveal returns the plain value. Call it only where the value leaves the
// agent on purpose: a child's environment or a 0600 file.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

// Equal reports whether two secrets hold the same value.
func (s Secret) Equal(o Secret) bool { return s.v == o.v }

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer so %#v redacts too.
func (Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter so every verb, including %q, %x and %v on a
// struct holding a Secret, redacts.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (YAML, text logs).
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
