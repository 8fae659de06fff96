//go:build unix

// Package secretstore fetches the host's secrets from AWS SSM Parameter Store (or
// a file, off EC2) and holds them in memory as values that never print, log
// or marshal.
package secretstore

import "github.com/molecule-ai/molecule-agent/controlplane/api/secret"

// Secret is a sensitive string that prints, logs and marshals as [redacted].
type Secret = secret.Secret

// Redacted is what a Secret shows in every printed, logged or marshalled form.
const Redacted = secret.Redacted

// New wraps a sensitive value.
func New(v string) Secret { return secret.New(v) }
